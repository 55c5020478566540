package plane_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// fetched collects what FetchBlobs delivered, checking each blob's hash
// and size as a consumer must.
type fetched struct {
	order []string
	data  map[string]string
}

func fetchAll(c *client.Client, hashes []string) (*fetched, error) {
	f := &fetched{data: map[string]string{}}
	err := c.FetchBlobs(bg, hashes, func(hash string, size int64, r io.Reader) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if int64(len(b)) != size || protocol.HashBytes(b) != hash {
			return errors.New("blob " + hash + " does not match its hash")
		}
		f.order = append(f.order, hash)
		f.data[hash] = string(b)
		return nil
	})
	return f, err
}

// TestFetchBlobs: POST /v1/blobs/fetch returns many blobs in one reply
// under exactly the scoping of GET /v1/blobs/{hash}; one forbidden or
// unknown hash refuses the whole request, naming it, before any blob is
// sent.
func TestFetchBlobs(t *testing.T) {
	tp := testutil.StartPlane(t, testutil.WithConfig(func(c *plane.Config) { c.MaxFetchBytes = 1000 }))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	filesA := map[string]string{"README.md": "# hello\n", "src/app.go": "package app\n", "copy.md": "# hello\n"}
	wsA := testutil.UploadWorkspace(t, req, filesA)
	runA := submit(t, req, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "a", Pool: "default", Workspace: wsA})
	wsB := testutil.UploadWorkspace(t, req, map[string]string{"other.txt": "another workspace\n"})
	runB := submit(t, req, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "b", Pool: "default", Workspace: wsB})
	rn := tp.EnrollRunner("default")
	clA, clB := rn.MustClaim(t), rn.MustClaim(t)
	if clA.RunID != runA.ID || clB.RunID != runB.ID {
		t.Fatalf("claimed %s, %s; want %s, %s", clA.RunID, clB.RunID, runA.ID, runB.ID)
	}
	readme, app := protocol.HashBytes([]byte("# hello\n")), protocol.HashBytes([]byte("package app\n"))

	t.Run("a run's workspace in one reply", func(t *testing.T) {
		if !clA.Offers(client.FeatureFetchBlobs) {
			t.Errorf("the claim's features %v do not offer %s", clA.Features, client.FeatureFetchBlobs)
		}
		ask := []string{wsA.BundleHash, app, readme, app} // app twice
		got, err := fetchAll(clA.Client, ask)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{wsA.BundleHash, app, readme}
		if strings.Join(got.order, ",") != strings.Join(want, ",") {
			t.Fatalf("got blobs %v, want each distinct hash once in the order asked %v", got.order, want)
		}
		if got.data[app] != "package app\n" || got.data[readme] != "# hello\n" {
			t.Errorf("contents: %q", got.data)
		}
	})
	t.Run("another run's blob refuses the whole request", func(t *testing.T) {
		got, err := fetchAll(clA.Client, []string{readme, wsB.BundleHash, app})
		ae := mustCode(t, err, client.CodeForbidden)
		if !strings.Contains(ae.Message, wsB.BundleHash) {
			t.Errorf("message %q does not name the forbidden blob", ae.Message)
		}
		if len(got.order) != 0 {
			t.Errorf("blobs %v were sent before the refusal", got.order)
		}
	})
	t.Run("outputs of the run, not of another", func(t *testing.T) {
		out, err := clB.Client.PutBlob(bg, []byte("output of B"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fetchAll(clA.Client, []string{out}); err == nil {
			t.Fatal("run A fetched run B's output")
		} else {
			mustCode(t, err, client.CodeForbidden)
		}
		got, err := fetchAll(clB.Client, []string{out, wsB.BundleHash})
		if err != nil || got.data[out] != "output of B" {
			t.Fatalf("own output: %v %q", err, got.data)
		}
	})
	t.Run("an unknown blob is not_found, named", func(t *testing.T) {
		unknown := protocol.HashBytes([]byte("never uploaded"))
		got, err := fetchAll(tp.Admin, []string{readme, unknown})
		ae := mustCode(t, err, client.CodeNotFound)
		if !strings.Contains(ae.Message, unknown) {
			t.Errorf("message %q does not name the missing blob", ae.Message)
		}
		if len(got.order) != 0 {
			t.Errorf("blobs %v were sent before the refusal", got.order)
		}
	})
	t.Run("a blob whose bytes are gone is not_found, named, not a broken stream", func(t *testing.T) {
		lost, err := tp.Admin.PutBlob(bg, []byte("recorded, then lost"))
		if err != nil {
			t.Fatal(err)
		}
		if err := tp.Blobs.Delete(bg, lost); err != nil {
			t.Fatal(err)
		}
		got, err := fetchAll(tp.Admin, []string{readme, lost})
		ae := mustCode(t, err, client.CodeNotFound)
		if !strings.Contains(ae.Message, lost) {
			t.Errorf("message %q does not name the lost blob", ae.Message)
		}
		if len(got.order) != 0 {
			t.Errorf("blobs %v were sent before the refusal", got.order)
		}
	})
	t.Run("principals: by role, and requesters their own", func(t *testing.T) {
		if _, err := fetchAll(tp.Admin, []string{wsA.BundleHash, wsB.BundleHash}); err != nil {
			t.Errorf("admin: %v", err)
		}
		if _, err := fetchAll(req, []string{wsA.BundleHash, readme}); err != nil {
			t.Errorf("the requester who uploaded them: %v", err)
		}
		other, _ := tp.NewPrincipal(client.RoleRequester)
		_, err := fetchAll(other, []string{readme})
		mustCode(t, err, client.CodeForbidden)
	})
	t.Run("limits and bad input", func(t *testing.T) {
		big := strings.Repeat("x", 600)
		h1, err := req.PutBlob(bg, []byte(big+"1"))
		if err != nil {
			t.Fatal(err)
		}
		h2, err := req.PutBlob(bg, []byte(big+"2"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fetchAll(req, []string{h1}); err != nil {
			t.Errorf("601 bytes under a 1000-byte fetch limit: %v", err)
		}
		_, err = fetchAll(req, []string{h1, h2})
		mustCode(t, err, client.CodeTooLarge)
		many := make([]string, plane.MaxFetchHashes+1)
		for i := range many {
			many[i] = protocol.HashBytes([]byte{byte(i), byte(i >> 8)})
		}
		_, err = fetchAll(req, many)
		mustCode(t, err, client.CodeTooLarge)
		if _, err := fetchAll(req, []string{"not-a-hash"}); err == nil {
			t.Error("the client sent a malformed hash")
		}
		if _, err := fetchAll(req, nil); err != nil {
			t.Errorf("nothing asked, nothing fetched: %v", err)
		}
	})
	t.Run("a used-up claim fetches nothing", func(t *testing.T) {
		clA.Finish(t, protocol.RunCompleted{})
		_, err := fetchAll(clA.Client, []string{readme})
		mustCode(t, err, client.CodeClaimUsed)
	})
}
