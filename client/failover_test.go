package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
)

// TestFailoverToTheNextReplica: a client given several replicas' URLs
// uses the first; when a request to it gets no reply it returns the
// transport error (nothing is re-sent behind the caller's back) and the
// next request, from it or from any copy made with WithToken, goes to the
// next replica.
func TestFailoverToTheNextReplica(t *testing.T) {
	ctx := context.Background()
	tp := testutil.StartPlane(t)
	dead := "http://" + testutil.FreeAddr(t)
	c, err := client.New(dead+" , "+tp.URL+"/", client.WithToken(tp.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != dead || c.PlaneURL() != dead {
		t.Fatalf("BaseURL %s, PlaneURL %s; want both %s", c.BaseURL(), c.PlaneURL(), dead)
	}
	copyBefore := c.WithToken(tp.AdminToken)
	_, err = c.WhoAmI(ctx)
	var te *client.TransportError
	if !errors.As(err, &te) || !client.IsTransient(err) {
		t.Fatalf("first request to a dead replica: %v, want a transient *TransportError", err)
	}
	if c.PlaneURL() != tp.URL {
		t.Fatalf("after the failure the client uses %s, want %s", c.PlaneURL(), tp.URL)
	}
	if me, err := copyBefore.WhoAmI(ctx); err != nil || me.Principal.Role != client.RoleAdmin {
		t.Fatalf("a WithToken copy after the failover: %+v %v", me, err)
	}
	// One replica alone never moves.
	single, err := client.New(dead)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = single.Info(ctx)
	if single.PlaneURL() != dead {
		t.Fatalf("a single-plane client moved to %s", single.PlaneURL())
	}
}

func TestPlaneURLListIsChecked(t *testing.T) {
	for _, bad := range []string{"", "http://a:1,", "http://a:1,ftp://b", "127.0.0.1:7070", "http://u:p@a:1", "http://a:1?x=y"} {
		if _, err := client.New(bad); err == nil || !strings.Contains(err.Error(), "want http://host:port") {
			t.Errorf("New(%q) = %v, want an error saying what a plane URL looks like", bad, err)
		}
	}
	if _, err := client.New("https://plane.example, http://10.0.0.2:7070"); err != nil {
		t.Errorf("two replicas: %v", err)
	}
}

// TestFailoverOnUnavailable: a replica that answers 502, 503 or 504 (its
// database unreachable, or a load balancer in front of it with no healthy
// upstream) returns that error to the caller, and the next request goes
// to the next replica; any other error status keeps the replica.
func TestFailoverOnUnavailable(t *testing.T) {
	ctx := context.Background()
	tp := testutil.StartPlane(t)
	for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusNotFound} {
		// A proxy with nothing healthy behind it.
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no healthy upstream", status)
		}))
		c, err := client.New(proxy.URL+","+tp.URL, client.WithToken(tp.AdminToken))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WhoAmI(ctx); err == nil {
			t.Fatalf("%d: the first request succeeded", status)
		}
		moves := status != http.StatusNotFound
		if got := c.PlaneURL() == tp.URL; got != moves {
			t.Errorf("after a %d the client uses %s (moved: %v, want %v)", status, c.PlaneURL(), got, moves)
		}
		if moves {
			if _, err := c.WhoAmI(ctx); err != nil {
				t.Errorf("after a %d, the next replica: %v", status, err)
			}
		}
		proxy.Close()
	}
}
