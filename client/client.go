// Package client is the Go SDK for the Warrant plane's HTTP API (/v1): the
// wire types and one method per route. The runner, the CLI and the web UI
// tests use it; so can anyone who drives Warrant from Go. docs/api.md lists
// the routes.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"warrant.dev/warrant/protocol"
)

// Version of this SDK and the API it speaks.
const Version = "v1"

// MaxResponseBytes caps the JSON replies the client reads.
const MaxResponseBytes = 256 << 20

// Client talks to one plane with one bearer token. It is safe for
// concurrent use. Methods take a context; long polls and streams end when
// it is cancelled.
type Client struct {
	planes    []*url.URL    // one plane, or the replicas of one deployment
	current   *atomic.Int32 // index into planes of the one in use (shared by WithToken copies)
	token     string
	http      *http.Client
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithToken sets the bearer token.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient sets the HTTP client (its Timeout must be zero or longer
// than the longest long poll).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// DefaultTransport is shared by clients that do not bring their own: it
// keeps enough idle connections for a runner's concurrent sessions.
var DefaultTransport http.RoundTripper = func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 0
	return t
}()

// New returns a client for the plane at baseURL (e.g.
// "http://127.0.0.1:7070"), or for the replicas of one deployment (planes
// sharing one database) given as a comma-separated list of their URLs.
// With several, the client uses the first until a request to it gets no
// reply (the connection is refused, or lost before the reply's headers)
// or a 502, 503 or 504, then moves to the next one in the list (and on
// around); the request that failed returns its *TransportError as usual,
// and the caller's retry goes to the next replica. Requests are not
// re-sent by the client itself, so a retry stays the caller's decision.
func New(baseURL string, opts ...Option) (*Client, error) {
	var planes []*url.URL
	for raw := range strings.SplitSeq(baseURL, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("plane URL %q: want http://host:port or https://host (several replicas: separate their URLs with commas)", raw)
		}
		planes = append(planes, u)
	}
	c := &Client{planes: planes, current: new(atomic.Int32), http: &http.Client{Transport: DefaultTransport}, userAgent: "warrant-client/" + Version}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// WithToken returns a copy of c that authenticates with token (e.g. a
// claim token for one run).
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// BaseURL returns the plane URL (with several replicas, the first).
func (c *Client) BaseURL() string { return c.planes[0].String() }

// PlaneURL returns the URL of the plane the client sends to now.
func (c *Client) PlaneURL() string { return c.planes[c.current.Load()].String() }

// failedOver moves to the next replica after a request to u got no
// reply or a 502/503/504; requests to another replica that failed at the
// same time move it only once.
func (c *Client) failedOver(u *url.URL) {
	if len(c.planes) < 2 {
		return
	}
	for i, p := range c.planes {
		if p.Scheme == u.Scheme && p.Host == u.Host && strings.HasPrefix(u.Path, p.Path) {
			c.current.CompareAndSwap(int32(i), int32((i+1)%len(c.planes)))
			return
		}
	}
}

func (c *Client) url(path string, q url.Values) string {
	u := *c.planes[c.current.Load()]
	u.Path = strings.TrimRight(u.Path, "/") + path
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// do sends a JSON request (body may be nil) and decodes a JSON reply into
// out (which may be nil). It returns the HTTP status.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), rd)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return resp.StatusCode, decodeError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxResponseBytes)).Decode(out); err != nil {
		return resp.StatusCode, &TransportError{Op: method + " " + path + ": decode reply", Err: err}
	}
	return resp.StatusCode, nil
}

// send adds the common headers and performs the request.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		c.failedOver(req.URL)
		return nil, &TransportError{Op: req.Method + " " + req.URL.Path, Err: err}
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		// The replica, or a proxy in front of it, cannot serve now (its
		// database unreachable, no healthy upstream): try the next one.
		c.failedOver(req.URL)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	var env struct {
		Error APIError `json:"error"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(data, &env); err != nil || env.Error.Code == "" {
		code := CodeInternal
		for c, s := range StatusForCode {
			if s == resp.StatusCode && (c == CodeNotFound || c == CodeUnavailable || c == CodeUnauthenticated || c == CodeTooLarge) {
				code = c
			}
		}
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return &APIError{Status: resp.StatusCode, Code: code, Message: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, msg)}
	}
	env.Error.Status = resp.StatusCode
	return &env.Error
}

// --- identity ---

// Info returns the plane's identity (no token needed).
func (c *Client) Info(ctx context.Context) (*Info, error) {
	var out Info
	_, err := c.do(ctx, http.MethodGet, "/v1/info", nil, nil, &out)
	return &out, err
}

// WhoAmI returns the principal behind the client's token.
func (c *Client) WhoAmI(ctx context.Context) (*WhoAmI, error) {
	var out WhoAmI
	_, err := c.do(ctx, http.MethodGet, "/v1/whoami", nil, nil, &out)
	return &out, err
}

// CreatePrincipal creates a principal and its first token (admin).
func (c *Client) CreatePrincipal(ctx context.Context, req CreatePrincipalRequest) (*CreatePrincipalResponse, error) {
	var out CreatePrincipalResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/principals", nil, req, &out)
	return &out, err
}

// ListPrincipals lists principals and their tokens' metadata (admin, auditor).
func (c *Client) ListPrincipals(ctx context.Context) ([]Principal, error) {
	var out struct {
		Principals []Principal `json:"principals"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/principals", nil, nil, &out)
	return out.Principals, err
}

// CreateToken mints another token for a principal (admin).
func (c *Client) CreateToken(ctx context.Context, principalID string) (*NewToken, error) {
	var out NewToken
	_, err := c.do(ctx, http.MethodPost, "/v1/principals/"+url.PathEscape(principalID)+"/tokens", nil, struct{}{}, &out)
	return &out, err
}

// RevokeToken revokes a token by id (admin).
func (c *Client) RevokeToken(ctx context.Context, tokenID string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(tokenID), nil, nil, nil)
	return err
}

// DisablePrincipal disables a principal and revokes all its tokens (admin).
func (c *Client) DisablePrincipal(ctx context.Context, principalID string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/principals/"+url.PathEscape(principalID), nil, nil, nil)
	return err
}

// --- runners ---

// CreateEnrollToken makes a one-time enroll token for a pool (admin).
func (c *Client) CreateEnrollToken(ctx context.Context, req EnrollTokenRequest) (*EnrollToken, error) {
	var out EnrollToken
	_, err := c.do(ctx, http.MethodPost, "/v1/enroll-tokens", nil, req, &out)
	return &out, err
}

// Enroll registers a runner's public key (authenticated by the enroll
// token in the request; the client's own token is not used).
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (*EnrollResponse, error) {
	var out EnrollResponse
	_, err := c.WithToken("").do(ctx, http.MethodPost, "/v1/runners/enroll", nil, req, &out)
	return &out, err
}

// ListRunners lists enrolled runners (admin, auditor, approver).
func (c *Client) ListRunners(ctx context.Context) ([]Runner, error) {
	var out struct {
		Runners []Runner `json:"runners"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/runners", nil, nil, &out)
	return out.Runners, err
}

// RevokeRunner revokes a runner: its token stops working and its in-flight
// runs fail when their leases lapse (admin).
func (c *Client) RevokeRunner(ctx context.Context, runnerID string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/runners/"+url.PathEscape(runnerID), nil, nil, nil)
	return err
}

// --- policy and secrets ---

// GetPolicy returns the plane's policy and its hash.
func (c *Client) GetPolicy(ctx context.Context) (*PolicyView, error) {
	var out PolicyView
	_, err := c.do(ctx, http.MethodGet, "/v1/policy", nil, nil, &out)
	return &out, err
}

// PutPolicy replaces the plane's policy (admin).
func (c *Client) PutPolicy(ctx context.Context, p protocol.Policy) (*PolicyView, error) {
	var out PolicyView
	_, err := c.do(ctx, http.MethodPut, "/v1/policy", nil, struct {
		Policy protocol.Policy `json:"policy"`
	}{p}, &out)
	return &out, err
}

// PutSecret stores a secret value, encrypted at rest (admin).
func (c *Client) PutSecret(ctx context.Context, name, value string) (*SecretInfo, error) {
	var out SecretInfo
	_, err := c.do(ctx, http.MethodPut, "/v1/secrets/"+url.PathEscape(name), nil, PutSecretRequest{Value: value}, &out)
	return &out, err
}

// ListSecrets lists secret names (never values).
func (c *Client) ListSecrets(ctx context.Context) ([]SecretInfo, error) {
	var out struct {
		Secrets []SecretInfo `json:"secrets"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/secrets", nil, nil, &out)
	return out.Secrets, err
}

// DeleteSecret deletes a secret (admin).
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/secrets/"+url.PathEscape(name), nil, nil, nil)
	return err
}

// --- runs ---

// SubmitRun asks the plane for a run. A policy denial is an *APIError with
// code policy_denied and every reason; a run that needs approval comes back
// in state awaiting_approval; a dry run returns the disclosure report.
func (c *Client) SubmitRun(ctx context.Context, req RunRequest) (*SubmitResponse, error) {
	var out SubmitResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/runs", nil, req, &out)
	return &out, err
}

// ListRuns lists runs, newest first.
func (c *Client) ListRuns(ctx context.Context, o ListRunsOptions) (*RunList, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": o.State, "pool": o.Pool, "agent": o.Agent, "requestedBy": o.RequestedBy, "cursor": o.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var out RunList
	_, err := c.do(ctx, http.MethodGet, "/v1/runs", q, nil, &out)
	return &out, err
}

// GetRun returns one run with its contract and receipt when they exist.
func (c *Client) GetRun(ctx context.Context, runID string) (*Run, error) {
	var out Run
	_, err := c.do(ctx, http.MethodGet, "/v1/runs/"+url.PathEscape(runID), nil, nil, &out)
	return &out, err
}

// Events returns a run's events with seq > after (after = -1 for all).
func (c *Client) Events(ctx context.Context, runID string, after int64) (*EventList, error) {
	var out EventList
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	_, err := c.do(ctx, http.MethodGet, "/v1/runs/"+url.PathEscape(runID)+"/events", q, nil, &out)
	return &out, err
}

// Approve approves a run awaiting approval (approver, admin).
func (c *Client) Approve(ctx context.Context, runID, reason string) (*Run, error) {
	var out Run
	_, err := c.do(ctx, http.MethodPost, "/v1/runs/"+url.PathEscape(runID)+"/approve", nil, DecisionRequest{Reason: reason}, &out)
	return &out, err
}

// Deny denies a run awaiting approval (approver, admin).
func (c *Client) Deny(ctx context.Context, runID, reason string) (*Run, error) {
	var out Run
	_, err := c.do(ctx, http.MethodPost, "/v1/runs/"+url.PathEscape(runID)+"/deny", nil, DecisionRequest{Reason: reason}, &out)
	return &out, err
}

// Cancel cancels a run: a queued one at once, a running one by telling its
// runner to stop. Cancelling an ended run is not an error; the run is
// returned as it is.
func (c *Client) Cancel(ctx context.Context, runID, reason string) (*Run, error) {
	var out Run
	_, err := c.do(ctx, http.MethodPost, "/v1/runs/"+url.PathEscape(runID)+"/cancel", nil, DecisionRequest{Reason: reason}, &out)
	return &out, err
}

// Bundle returns the run's warrant.bundle.v1 and its exact bytes.
func (c *Client) Bundle(ctx context.Context, runID string) (*protocol.Bundle, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/runs/"+url.PathEscape(runID)+"/bundle", nil), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, nil, decodeError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxDocumentBytes+1))
	if err != nil {
		return nil, nil, &TransportError{Op: "read bundle", Err: err}
	}
	b, err := protocol.ParseBundle(data)
	if err != nil {
		return nil, data, fmt.Errorf("bundle of run %s: %w", runID, err)
	}
	return b, data, nil
}

// Export streams runs, events and receipts created since the given time as
// JSON lines (admin, auditor). The caller closes the reader.
func (c *Client) Export(ctx context.Context, since time.Time) (io.ReadCloser, error) {
	q := url.Values{"since": {protocol.FormatTime(since)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/export", q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}

// RetentionLog lists what the retention policy deleted (admin, auditor).
func (c *Client) RetentionLog(ctx context.Context) ([]RetentionRecord, error) {
	var out struct {
		Records []RetentionRecord `json:"records"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/retention", nil, nil, &out)
	return out.Records, err
}

// --- runner side ---

// Claim long-polls for work (runner token). It returns nil, nil when no run
// arrived within req.WaitSeconds.
func (c *Client) Claim(ctx context.Context, req ClaimRequest) (*Claim, error) {
	var out Claim
	status, err := c.do(ctx, http.MethodPost, "/v1/claims", nil, req, &out)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNoContent {
		return nil, nil
	}
	return &out, nil
}

// Heartbeat renews the claim's lease (claim token) and reports any
// cancellation.
func (c *Client) Heartbeat(ctx context.Context, runID string, req HeartbeatRequest) (*HeartbeatResponse, error) {
	var out HeartbeatResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/runs/"+url.PathEscape(runID)+"/heartbeat", nil, req, &out)
	return &out, err
}

// AppendEvents appends chained events (claim token); the plane checks each
// link.
func (c *Client) AppendEvents(ctx context.Context, runID string, events []protocol.ChainedEvent) (*ChainHead, error) {
	var out ChainHead
	_, err := c.do(ctx, http.MethodPost, "/v1/runs/"+url.PathEscape(runID)+"/events", nil, AppendEventsRequest{Events: events}, &out)
	return &out, err
}

// Complete posts the runner-signed receipt (claim token) and returns it
// countersigned by the plane.
func (c *Client) Complete(ctx context.Context, runID string, receipt *protocol.Receipt) (*protocol.Receipt, error) {
	var out CompleteResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/runs/"+url.PathEscape(runID)+"/complete", nil, CompleteRequest{Receipt: receipt}, &out)
	if err != nil {
		return nil, err
	}
	if out.Receipt == nil {
		return nil, &TransportError{Op: "complete", Err: errors.New("reply has no receipt")}
	}
	return out.Receipt, nil
}

// --- blobs ---

// MissingBlobs returns the hashes the plane does not have.
func (c *Client) MissingBlobs(ctx context.Context, hashes []string) ([]string, error) {
	var out MissingBlobsResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/blobs/missing", nil, MissingBlobsRequest{Hashes: hashes}, &out)
	return out.Missing, err
}

// PutBlob uploads one blob; the plane checks that data hashes to hash.
func (c *Client) PutBlob(ctx context.Context, data []byte) (string, error) {
	hash := protocol.HashBytes(data)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url("/v1/blobs/"+hash, nil), bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.send(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return "", decodeError(resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return hash, nil
}

// BlobUpload is one blob for PutBlobs; Open is called once, while the
// request body streams.
type BlobUpload struct {
	Hash string
	Size int64
	Open func() (io.ReadCloser, error)
}

// BlobsContentType is the media type of a batch upload body: for each blob
// a line "<sha256 hex> <size>\n" followed by exactly size bytes.
const BlobsContentType = "application/vnd.warrant.blobs"

// PutBlobs uploads many blobs in one streaming request.
func (c *Client) PutBlobs(ctx context.Context, blobs []BlobUpload) (*PutBlobsResponse, error) {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		for _, b := range blobs {
			if err := writeBlobFrame(bw, b); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(bw.Flush())
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/blobs", nil), pr)
	if err != nil {
		pr.Close()
		return nil, err
	}
	req.Header.Set("Content-Type", BlobsContentType)
	resp, err := c.send(req)
	if err != nil {
		pr.CloseWithError(err)
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, decodeError(resp)
	}
	var out PutBlobsResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, &TransportError{Op: "POST /v1/blobs: decode reply", Err: err}
	}
	return &out, nil
}

func writeBlobFrame(w io.Writer, b BlobUpload) error {
	if _, err := fmt.Fprintf(w, "%s %d\n", b.Hash, b.Size); err != nil {
		return err
	}
	rc, err := b.Open()
	if err != nil {
		return fmt.Errorf("open blob %s: %w", b.Hash, err)
	}
	defer rc.Close()
	n, err := io.Copy(w, io.LimitReader(rc, b.Size))
	if err != nil {
		return fmt.Errorf("read blob %s: %w", b.Hash, err)
	}
	if n != b.Size {
		return fmt.Errorf("blob %s: read %d bytes, expected %d (did the file change during upload?)", b.Hash, n, b.Size)
	}
	return nil
}

// FetchBlobs downloads blobs in one request (POST /v1/blobs/fetch) and
// calls fn for each distinct hash, in the order first asked, with a reader
// of its size bytes that is valid only during the call. fn should check
// the content's hash; what it leaves unread is skipped. The plane checks
// every hash before it sends anything: a blob the token may not read is an
// error with code forbidden, an unknown one not_found, each naming the
// hash. A stream that ends early, or brings a blob not asked for, is a
// *TransportError; an error from fn ends the download and is returned.
func (c *Client) FetchBlobs(ctx context.Context, hashes []string, fn func(hash string, size int64, r io.Reader) error) error {
	want := make([]string, 0, len(hashes))
	seen := make(map[string]struct{}, len(hashes))
	for _, h := range hashes {
		if !protocol.IsHash(h) {
			return fmt.Errorf("blob hash %q is not 64 lowercase hex characters", h)
		}
		if _, dup := seen[h]; !dup {
			seen[h] = struct{}{}
			want = append(want, h)
		}
	}
	if len(want) == 0 {
		return nil
	}
	body, err := json.Marshal(FetchBlobsRequest{Hashes: want})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/blobs/fetch", nil), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, BlobsContentType) {
		return &TransportError{Op: "POST /v1/blobs/fetch", Err: fmt.Errorf("reply is %q, not %s", ct, BlobsContentType)}
	}
	broken := func(format string, args ...any) error {
		return &TransportError{Op: "POST /v1/blobs/fetch", Err: fmt.Errorf(format, args...)}
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for i, h := range want {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return broken("the stream ended after %d of %d blobs: %v", i, len(want), err)
		}
		got, sizeText, ok := strings.Cut(strings.TrimSuffix(string(line), "\n"), " ")
		size, perr := strconv.ParseInt(sizeText, 10, 64)
		if !ok || perr != nil || size < 0 {
			return broken("blob %d: malformed frame header", i)
		}
		if got != h {
			return broken("blob %d is %q, asked for %s", i, got, h)
		}
		fr := &frameReader{r: br, left: size}
		err = fn(h, size, fr)
		if err == nil {
			_, err = io.Copy(io.Discard, fr)
		}
		if fr.err != nil { // the stream broke, whatever fn made of it
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return broken("blob %s (%d of %d bytes read): %v", h, size-fr.left, size, fr.err)
		}
		if err != nil {
			return err
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return broken("more data after the %d blobs asked for", len(want))
	}
	return nil
}

// frameReader reads one blob of a fetch stream: exactly left bytes. A
// stream that ends or fails first is recorded in err (and reads as
// io.ErrUnexpectedEOF), so it is reported as a broken transfer rather
// than as content that does not match its hash.
type frameReader struct {
	r    io.Reader
	left int64
	err  error
}

func (f *frameReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= int64(n)
	if err == io.EOF && f.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		f.err = err
		return n, err
	}
	return n, nil
}

// GetBlob downloads a blob. The caller closes the reader and should check
// the content's hash (the plane does on upload).
func (c *Client) GetBlob(ctx context.Context, hash string) (io.ReadCloser, error) {
	if !protocol.IsHash(hash) {
		return nil, fmt.Errorf("blob hash %q is not 64 lowercase hex characters", hash)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/blobs/"+hash, nil), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}
