package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// replyWith is a stand-in plane that answers POST /v1/blobs/fetch with
// body, as a misbehaving or cut-off server might. (The real plane's
// behaviour is tested in internal/plane.)
func replyWith(t *testing.T, body string) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", client.BlobsContentType)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken("x"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func frame(data string) string {
	return fmt.Sprintf("%s %d\n%s", protocol.HashBytes([]byte(data)), len(data), data)
}

// TestFetchBlobsStream: the client delivers exactly the blobs asked for; a
// stream that is cut, brings another blob or carries more is a transport
// error (worth retrying), never a short success or a hash mismatch; an
// error of the callback is returned as it is.
func TestFetchBlobsStream(t *testing.T) {
	a, b := "alpha\n", "bravo bravo\n"
	ha, hb := protocol.HashBytes([]byte(a)), protocol.HashBytes([]byte(b))
	collect := func(c *client.Client, hashes ...string) (map[string]string, error) {
		got := map[string]string{}
		err := c.FetchBlobs(context.Background(), hashes, func(h string, size int64, r io.Reader) error {
			data, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			if int64(len(data)) != size || protocol.HashBytes(data) != h {
				return errors.New("content does not match its hash")
			}
			got[h] = string(data)
			return nil
		})
		return got, err
	}
	transport := func(t *testing.T, err error) {
		t.Helper()
		var te *client.TransportError
		if !errors.As(err, &te) || !client.IsTransient(err) {
			t.Fatalf("got %v, want a transient *TransportError", err)
		}
	}
	t.Run("whole", func(t *testing.T) {
		got, err := collect(replyWith(t, frame(a)+frame(b)), ha, hb)
		if err != nil || got[ha] != a || got[hb] != b {
			t.Fatalf("%v %q", err, got)
		}
	})
	t.Run("cut inside a blob", func(t *testing.T) {
		whole := frame(a) + frame(b)
		_, err := collect(replyWith(t, whole[:len(whole)-3]), ha, hb)
		transport(t, err)
	})
	t.Run("cut between blobs", func(t *testing.T) {
		_, err := collect(replyWith(t, frame(a)), ha, hb)
		transport(t, err)
	})
	t.Run("a blob not asked for", func(t *testing.T) {
		_, err := collect(replyWith(t, frame(b)+frame(a)), ha, hb)
		transport(t, err)
	})
	t.Run("more than asked for", func(t *testing.T) {
		_, err := collect(replyWith(t, frame(a)+frame(b)), ha)
		transport(t, err)
	})
	t.Run("a size that is not a number", func(t *testing.T) {
		_, err := collect(replyWith(t, ha+" many\n"+a), ha)
		transport(t, err)
	})
	t.Run("the callback's error", func(t *testing.T) {
		stop := errors.New("stop here")
		err := replyWith(t, frame(a)+frame(b)).FetchBlobs(context.Background(), []string{ha, hb}, func(string, int64, io.Reader) error { return stop })
		if !errors.Is(err, stop) {
			t.Fatalf("got %v, want the callback's error", err)
		}
	})
	t.Run("a lying server is caught by the consumer", func(t *testing.T) {
		forged := fmt.Sprintf("%s %d\n%s", ha, len(b), b) // b's bytes under a's name
		_, err := collect(replyWith(t, forged), ha)
		if err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("got %v, want the consumer's hash check to refuse it", err)
		}
	})
}
