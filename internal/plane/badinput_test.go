package plane_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// rawCall sends a raw request and decodes the error envelope.
func rawCall(t *testing.T, method, url, token, contentType string, body []byte) (int, client.APIError) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var env struct {
		Error client.APIError `json:"error"`
	}
	if resp.StatusCode >= 400 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: error with Content-Type %q: %s", method, url, ct, data)
		}
		if err := json.Unmarshal(data, &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
			t.Fatalf("%s %s: error body %q is not a JSON error", method, url, data)
		}
	}
	return resp.StatusCode, env.Error
}

// TestBadInput: malformed JSON, oversized bodies, unknown fields, wrong
// versions, duplicate keys and forged signatures get a 4xx with a clear
// JSON error, and nothing is stored.
func TestBadInput(t *testing.T) {
	tp := testutil.StartPlane(t, testutil.WithConfig(func(c *plane.Config) { c.MaxBodyBytes = 64 << 10; c.MaxBlobBytes = 1 << 20 }))
	reqC, _ := tp.NewPrincipal(client.RoleRequester)
	good := basicRequest(t, reqC)
	goodJSON, _ := json.Marshal(good)
	token := tp.AdminToken
	runs := tp.URL + "/v1/runs"

	cases := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"malformed", `{"agent": {"kind": "mock"`, 400, client.CodeBadRequest},
		{"not an object", `[1,2,3]`, 400, client.CodeBadRequest},
		{"empty", ``, 400, client.CodeBadRequest},
		{"trailing data", string(goodJSON) + `{}`, 400, client.CodeBadRequest},
		{"unknown field", strings.Replace(string(goodJSON), `"pool":`, `"poool":"x","pool":`, 1), 400, client.CodeBadRequest},
		{"duplicate key", strings.Replace(string(goodJSON), `"pool":`, `"pool":"local","pool":`, 1), 400, client.CodeBadRequest},
		{"wrong type", strings.Replace(string(goodJSON), `"prompt":"update notes"`, `"prompt":42`, 1), 400, client.CodeBadRequest},
		{"wrong manifest version", strings.Replace(string(goodJSON), protocol.VersionManifest, "warrant.manifest.v2", 1), 400, client.CodeBadRequest},
		{"unknown agent", strings.Replace(string(goodJSON), `"kind":"mock"`, `"kind":"gpt"`, 1), 400, client.CodeBadRequest},
		{"bad hash", strings.Replace(string(goodJSON), good.Workspace.BundleHash, "ABC", 1), 400, client.CodeBadRequest},
		{"invalid utf-8", strings.Replace(string(goodJSON), "update notes", "update \xff notes", 1), 400, client.CodeBadRequest},
		{"oversized", `{"prompt":"` + strings.Repeat("x", 70<<10) + `"}`, 413, client.CodeTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, e := rawCall(t, "POST", runs, token, "application/json", []byte(tc.body))
			if status != tc.status || e.Code != tc.code {
				t.Fatalf("status %d code %s (%s), want %d %s", status, e.Code, e.Message, tc.status, tc.code)
			}
			t.Logf("%s → %d %s: %s", tc.name, status, e.Code, e.Message)
		})
	}
	if status, _ := rawCall(t, "POST", runs, token, "application/json", goodJSON); status != 201 {
		t.Fatalf("the good request failed: %d", status)
	}
	list, _ := tp.Admin.ListRuns(bg, client.ListRunsOptions{})
	if len(list.Runs) != 1 {
		t.Fatalf("%d runs stored, want only the good one", len(list.Runs))
	}

	t.Run("unknown route", func(t *testing.T) {
		status, e := rawCall(t, "GET", tp.URL+"/v1/nothing", token, "", nil)
		if status != 404 || e.Code != client.CodeNotFound {
			t.Fatalf("%d %s", status, e.Code)
		}
	})
	t.Run("blob hash mismatch", func(t *testing.T) {
		h := protocol.HashBytes([]byte("claimed"))
		status, e := rawCall(t, "PUT", tp.URL+"/v1/blobs/"+h, token, "application/octet-stream", []byte("actual"))
		if status != 422 || e.Code != client.CodeHashMismatch {
			t.Fatalf("%d %s", status, e.Code)
		}
		if missing, _ := tp.Admin.MissingBlobs(bg, []string{h}); len(missing) != 1 {
			t.Fatal("a mismatched blob was stored")
		}
		if has, _ := tp.Blobs.Has(bg, h); has {
			t.Fatal("a mismatched blob's bytes were stored")
		}
	})
	t.Run("blob too large", func(t *testing.T) {
		big := bytes.Repeat([]byte("b"), 1<<20+1)
		status, e := rawCall(t, "PUT", tp.URL+"/v1/blobs/"+protocol.HashBytes(big), token, "application/octet-stream", big)
		if status != 413 || e.Code != client.CodeTooLarge {
			t.Fatalf("%d %s", status, e.Code)
		}
	})
	t.Run("truncated batch", func(t *testing.T) {
		h := protocol.HashBytes([]byte("0123456789"))
		status, e := rawCall(t, "POST", tp.URL+"/v1/blobs", token, client.BlobsContentType, []byte(h+" 10\n01234"))
		if status != 400 || e.Code != client.CodeBadRequest {
			t.Fatalf("%d %s: %s", status, e.Code, e.Message)
		}
		status, _ = rawCall(t, "POST", tp.URL+"/v1/blobs", token, client.BlobsContentType, []byte("nonsense\n"))
		if status != 400 {
			t.Fatalf("bad header line: %d", status)
		}
		if missing, _ := tp.Admin.MissingBlobs(bg, []string{h}); len(missing) != 1 {
			t.Fatal("a truncated blob was stored")
		}
	})

	// Runner side: forged receipts and events.
	rn := tp.EnrollRunner("default")
	cl := rn.MustClaim(t)
	t.Run("forged events", func(t *testing.T) {
		e, _ := protocol.NextEvent(&cl.Events[len(cl.Events)-1], "", protocol.NewEvent(protocol.FileChanged{Path: "a", ContentHash: "b"}), time.Now())
		forged := e
		forged.Hash = protocol.HashBytes([]byte("forged"))
		_, err := cl.Client.AppendEvents(bg, cl.RunID, []protocol.ChainedEvent{forged})
		mustCode(t, err, client.CodeChainRejected)
		gap, _ := protocol.NextEvent(&e, "", protocol.NewEvent(protocol.RunCompleted{}), time.Now())
		_, err = cl.Client.AppendEvents(bg, cl.RunID, []protocol.ChainedEvent{gap})
		ae := mustCode(t, err, client.CodeChainRejected)
		if ae.Seq == nil || *ae.Seq != e.Seq {
			t.Fatalf("gap reported at %v, want %d", ae.Seq, e.Seq)
		}
		stored, _ := tp.Admin.Events(bg, cl.RunID, -1)
		if len(stored.Events) != len(cl.Events) {
			t.Fatalf("rejected events were stored: %d", len(stored.Events))
		}
	})
	cl.Append(t, protocol.RunCompleted{})
	t.Run("forged receipts", func(t *testing.T) {
		impostor, _ := protocol.GenerateKey(nil)
		rc := cl.Receipt(t, "")
		rc.Signatures = nil
		if err := rc.Sign(impostor, protocol.SignerRunner); err != nil {
			t.Fatal(err)
		}
		_, err := cl.Client.Complete(bg, cl.RunID, rc)
		ae := mustCode(t, err, client.CodeReceiptRejected)
		if ae.Check != protocol.CheckRunnerKey && ae.Check != protocol.CheckRunnerSignature {
			t.Fatalf("check = %q", ae.Check)
		}
		// A field changed after signing.
		rc = cl.Receipt(t, "")
		tampered := *rc
		tampered.EventCount = 99
		_, err = cl.Client.Complete(bg, cl.RunID, &tampered)
		mustCode(t, err, client.CodeReceiptRejected)
		// A receipt that claims a plane countersignature already.
		rc = cl.Receipt(t, "")
		_ = rc.Sign(impostor, protocol.SignerPlane)
		_, err = cl.Client.Complete(bg, cl.RunID, rc)
		mustCode(t, err, client.CodeReceiptRejected)
		// A diff hash with no artifact event.
		rc = cl.Receipt(t, protocol.HashBytes([]byte("diff")))
		_, err = cl.Client.Complete(bg, cl.RunID, rc)
		ae = mustCode(t, err, client.CodeReceiptRejected)
		if ae.Check != protocol.CheckDiffArtifact {
			t.Fatalf("check = %q", ae.Check)
		}
		got, _ := tp.Admin.GetRun(bg, cl.RunID)
		if got.HasReceipt || got.State != protocol.StateClaimed {
			t.Fatalf("a rejected receipt changed the run: %+v", got)
		}
		// The genuine receipt is still accepted.
		if _, err := cl.Client.Complete(bg, cl.RunID, cl.Receipt(t, "")); err != nil {
			t.Fatalf("genuine receipt: %v", err)
		}
	})
}
