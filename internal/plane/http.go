package plane

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// apiError is an error with a wire code and a message safe to show; the
// cause goes only to the log.
type apiError struct {
	code    string
	msg     string
	reasons []string
	check   string
	seq     *int64
	cause   error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.code + ": " + e.msg + ": " + e.cause.Error()
	}
	return e.code + ": " + e.msg
}

func (e *apiError) Unwrap() error { return e.cause }

func errf(code, format string, args ...any) *apiError {
	return &apiError{code: code, msg: fmt.Sprintf(format, args...)}
}

func (e *apiError) because(cause error) *apiError { e.cause = cause; return e }

// toAPIError maps an error to its wire form. Store sentinels have fixed
// meanings; anything unknown is internal (its detail stays in the log).
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var ce *store.ChainError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ce):
		seq := ce.Seq
		return &apiError{code: client.CodeChainRejected, msg: ce.Reason, seq: &seq, cause: err}
	case errors.As(err, &mbe):
		return errf(client.CodeTooLarge, "request body exceeds %d bytes", mbe.Limit).because(err)
	case errors.Is(err, store.ErrNotFound):
		return errf(client.CodeNotFound, "not found").because(err)
	case errors.Is(err, store.ErrConflict):
		return errf(client.CodeConflict, "already exists").because(err)
	case errors.Is(err, store.ErrInvalidState):
		return errf(client.CodeInvalidState, "not allowed in the run's current state").because(err)
	case errors.Is(err, store.ErrLeaseExpired):
		return errf(client.CodeClaimExpired, "the claim's lease expired; the run was failed and will not be resumed").because(err)
	case errors.Is(err, store.ErrClaimUsed):
		return errf(client.CodeClaimUsed, "the claim token was used up: the run has ended").because(err)
	case errors.Is(err, store.ErrHashMismatch):
		return errf(client.CodeHashMismatch, "content does not match its hash").because(err)
	case errors.Is(err, store.ErrTooLarge):
		return errf(client.CodeTooLarge, "content exceeds the size limit").because(err)
	case store.IsStorageFull(err):
		// Nothing was written; the same request succeeds once an operator
		// frees space, so it is worth retrying (not a bug: not internal).
		return errf(client.CodeUnavailable, "the plane's storage is full; nothing was written, retry later").because(err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errf(client.CodeUnavailable, "request cancelled").because(err)
	}
	return errf(client.CodeInternal, "internal error; see the plane log for this request id").because(err)
}

type errorBody struct {
	Error client.APIError `json:"error"`
}

// reqInfo is per-request state shared between the middleware layers.
type reqInfo struct {
	id      string
	route   string
	subject string // who, for the log: principal/runner/claim id
	who     *identity
}

type ctxKey struct{}

func info(r *http.Request) *reqInfo {
	ri, _ := r.Context().Value(ctxKey{}).(*reqInfo)
	if ri == nil {
		return &reqInfo{}
	}
	return ri
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// statusWriter records the status for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// handlerFunc is a handler that returns its error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route registers pattern with the given authentication rule.
func (p *Plane) route(mux *http.ServeMux, pattern string, rule authRule, h handlerFunc) {
	mux.Handle(pattern, p.wrap(pattern, rule, h))
}

// wrap adds request ids, recovery, authentication, rate limiting, error
// rendering, the access log and metrics.
func (p *Plane) wrap(pattern string, rule authRule, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{id: newRequestID(), route: pattern}
		w := &statusWriter{ResponseWriter: rw}
		w.Header().Set("X-Request-Id", ri.id)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, ri))
		err := func() (err error) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					err = fmt.Errorf("panic: %v", v)
				}
			}()
			id, err := p.authenticate(r, rule)
			if err != nil {
				return err
			}
			ri.who = id
			if id != nil {
				ri.subject = id.subject()
			}
			if err := p.limit(w, r, ri); err != nil {
				return err
			}
			return h(w, r)
		}()
		if err != nil {
			p.writeError(w, r, ri, err)
		}
		dur := time.Since(start)
		status := w.status
		if status == 0 {
			status = http.StatusOK
		}
		p.metrics.observeHTTP(pattern, status, dur)
		p.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("requestId", ri.id), slog.String("method", r.Method), slog.String("route", pattern),
			slog.Int("status", status), slog.Float64("ms", float64(dur.Microseconds())/1000), slog.String("subject", ri.subject),
			slog.Int64("bytes", w.bytes))
	})
}

func (p *Plane) writeError(w *statusWriter, r *http.Request, ri *reqInfo, err error) {
	ae := toAPIError(err)
	status := client.StatusForCode[ae.code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	level := slog.LevelInfo
	if status >= 500 && (ae.code != client.CodeUnavailable || store.IsStorageFull(ae.cause)) {
		level = slog.LevelError // an operator must act
	}
	attrs := []slog.Attr{slog.String("requestId", ri.id), slog.String("route", ri.route), slog.String("code", ae.code), slog.String("message", ae.msg)}
	if ae.cause != nil {
		attrs = append(attrs, slog.String("cause", ae.cause.Error()))
	}
	p.log.LogAttrs(r.Context(), level, "request failed", attrs...)
	if w.status != 0 {
		return // the reply had started (a stream); nothing more to say
	}
	if ae.code == client.CodeRateLimited && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, errorBody{Error: client.APIError{Code: ae.code, Message: ae.msg, Reasons: ae.reasons, Check: ae.check, Seq: ae.seq, RequestID: ri.id}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"code":"internal","message":"encoding the reply failed"}}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// readBody reads a request body of at most limit bytes.
func (p *Plane) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errf(client.CodeTooLarge, "request body exceeds the %d byte limit", limit)
		}
		return nil, errf(client.CodeBadRequest, "could not read the request body").because(err)
	}
	return data, nil
}

// decode strictly decodes a JSON request body into dst: well-formed
// I-JSON (no duplicate members), no unknown fields, one value. When
// optional is set an empty body leaves dst as it is.
func (p *Plane) decode(w http.ResponseWriter, r *http.Request, dst any, optional bool) error {
	data, err := p.readBody(w, r, p.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if optional {
			return nil
		}
		return errf(client.CodeBadRequest, "request body is empty; expected a JSON object")
	}
	if _, err := protocol.Parse(data); err != nil {
		return errf(client.CodeBadRequest, "malformed JSON: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return errf(client.CodeBadRequest, "invalid request: %s", jsonErrorText(err))
	}
	return nil
}

// jsonErrorText makes a decoding error readable without echoing values.
func jsonErrorText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return "expected a JSON object, got JSON " + te.Value
		}
		return fmt.Sprintf("field %q: expected %s, got JSON %s", te.Field, te.Type, te.Value)
	}
	return err.Error()
}

// clientIP is the remote address without its port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
