package plane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// MaxMissingHashes caps one POST /v1/blobs/missing.
const MaxMissingHashes = 100_000

// workspaceInfo is what a manifest references.
type workspaceInfo struct {
	hashes []string // every blob, snapshot first, distinct
	set    map[string]struct{}
	files  int   // files in the snapshot
	bytes  int64 // their total size

	snapshotMissing bool // dry runs: the plane does not hold the snapshot
}

// parsedSnapshot is the part of a parsed snapshot the plane keeps.
type parsedSnapshot struct {
	hashes []string            // distinct file hashes, in snapshot order
	set    map[string]struct{} // the same, for lookups
	files  int
	bytes  int64
}

// snapshotCache keeps recently parsed snapshots, bounded by the number of
// file hashes held (oldest evicted first).
type snapshotCache struct {
	mu        sync.Mutex
	maxHashes int
	held      int
	m         map[string]*parsedSnapshot
	order     []string
}

func newSnapshotCache(maxHashes int) *snapshotCache {
	return &snapshotCache{maxHashes: maxHashes, m: map[string]*parsedSnapshot{}}
}

func (c *snapshotCache) get(h string) *parsedSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[h]
}

func (c *snapshotCache) put(h string, s *parsedSnapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[h]; ok {
		return
	}
	for len(c.order) > 0 && c.held+len(s.hashes) > c.maxHashes {
		old := c.order[0]
		c.order = c.order[1:]
		c.held -= len(c.m[old].hashes)
		delete(c.m, old)
	}
	c.m[h] = s
	c.order = append(c.order, h)
	c.held += len(s.hashes)
}

// snapshot loads and parses a snapshot blob (cached).
func (p *Plane) snapshot(ctx context.Context, hash string) (*parsedSnapshot, error) {
	if s := p.snaps.get(hash); s != nil {
		return s, nil
	}
	rc, _, err := p.blobs.Open(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errf(client.CodeBlobMissing, "the workspace snapshot %s was never uploaded", hash)
	}
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(rc, p.cfg.MaxBlobBytes))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", hash, err)
	}
	snap, err := protocol.ParseSnapshot(data)
	if err != nil {
		return nil, errf(client.CodeBadRequest, "workspace snapshot %s: %v", hash, err)
	}
	ps := &parsedSnapshot{files: len(snap.Entries), set: make(map[string]struct{}, len(snap.Entries))}
	for _, e := range snap.Entries {
		ps.bytes += e.Size
		if _, dup := ps.set[e.Hash]; !dup {
			ps.set[e.Hash] = struct{}{}
			ps.hashes = append(ps.hashes, e.Hash)
		}
	}
	p.snaps.put(hash, ps)
	return ps, nil
}

// workspaceOf lists the blobs a manifest references: the snapshot (or git
// bundle), every file of the snapshot, untracked files, the dirty diff.
func (p *Plane) workspaceOf(ctx context.Context, m *protocol.Manifest) (*workspaceInfo, error) {
	ws := &workspaceInfo{set: map[string]struct{}{}}
	add := func(h string) {
		if _, ok := ws.set[h]; !ok {
			ws.set[h] = struct{}{}
			ws.hashes = append(ws.hashes, h)
		}
	}
	add(m.BundleHash)
	if m.Format == protocol.SnapshotVersion {
		s, err := p.snapshot(ctx, m.BundleHash)
		if err != nil {
			return nil, err
		}
		ws.files, ws.bytes = s.files, s.bytes
		for _, h := range s.hashes {
			add(h)
		}
	}
	for _, f := range m.UntrackedFiles {
		add(f.Hash)
		ws.bytes += f.Bytes
	}
	if m.DirtyDiffHash != "" {
		add(m.DirtyDiffHash)
	}
	return ws, nil
}

// handleMissing is POST /v1/blobs/missing.
func (p *Plane) handleMissing(w http.ResponseWriter, r *http.Request) error {
	var req client.MissingBlobsRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if len(req.Hashes) > MaxMissingHashes {
		return errf(client.CodeTooLarge, "at most %d hashes per call", MaxMissingHashes)
	}
	for i, h := range req.Hashes {
		if !protocol.IsHash(h) {
			return errf(client.CodeBadRequest, "hashes[%d] is not a sha256 hex hash", i)
		}
	}
	missing, err := p.store.MissingBlobs(r.Context(), req.Hashes)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.MissingBlobsResponse{Missing: missing})
	return nil
}

// storeBlob stores one blob read from body and indexes it; it returns
// whether the blob is new.
func (p *Plane) storeBlob(ctx context.Context, hash string, body io.Reader, limit int64) (int64, bool, error) {
	n, _, err := p.blobs.Put(ctx, hash, body, limit)
	if err != nil {
		return n, false, err
	}
	now := p.now()
	created, err := p.store.PutBlobMeta(ctx, store.BlobMeta{Hash: hash, Size: n, CreatedAt: now, LastRefAt: now})
	return n, created, err
}

// recordUploads remembers who uploaded blobs: a principal (for read
// access) or a claimed run (its outputs).
func (p *Plane) recordUploads(ctx context.Context, id *identity, hashes []string) error {
	if len(hashes) == 0 {
		return nil
	}
	now := p.now()
	if id.claim != nil {
		for _, h := range hashes {
			if err := p.store.AddRunOutput(ctx, id.claim.ID, h, now); err != nil {
				return err
			}
		}
		return nil
	}
	return p.store.RefBlobs(ctx, id.principal.ID, hashes, now)
}

// handlePutBlob is PUT /v1/blobs/{hash}.
func (p *Plane) handlePutBlob(w http.ResponseWriter, r *http.Request) error {
	hash := r.PathValue("hash")
	if !protocol.IsHash(hash) {
		return errf(client.CodeBadRequest, "blob name must be the sha256 hex hash of its content")
	}
	if r.ContentLength > p.cfg.MaxBlobBytes {
		return errf(client.CodeTooLarge, "blob of %d bytes exceeds the %d byte limit", r.ContentLength, p.cfg.MaxBlobBytes)
	}
	n, created, err := p.storeBlob(r.Context(), hash, r.Body, p.cfg.MaxBlobBytes)
	if err != nil {
		return err
	}
	if err := p.recordUploads(r.Context(), info(r).who, []string{hash}); err != nil {
		return err
	}
	resp := client.PutBlobsResponse{Bytes: n}
	if created {
		resp.Stored = 1
	} else {
		resp.Present = 1
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// handlePutBlobs is POST /v1/blobs: a stream of "<hash> <size>\n" + bytes.
func (p *Plane) handlePutBlobs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, client.BlobsContentType) {
		return errf(client.CodeBadRequest, "Content-Type must be %s", client.BlobsContentType)
	}
	br := bufio.NewReaderSize(r.Body, 64<<10)
	var resp client.PutBlobsResponse
	var hashes []string
	for i := 0; ; i++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		if err != nil {
			return errf(client.CodeBadRequest, "blob %d: header line: want \"<hash> <size>\\n\"", i).because(err)
		}
		h, sizeText, ok := strings.Cut(strings.TrimSuffix(string(line), "\n"), " ")
		size, perr := strconv.ParseInt(sizeText, 10, 64)
		if !ok || !protocol.IsHash(h) || perr != nil || size < 0 {
			return errf(client.CodeBadRequest, "blob %d: header line: want \"<hash> <size>\\n\"", i)
		}
		if size > p.cfg.MaxBlobBytes {
			return errf(client.CodeTooLarge, "blob %s of %d bytes exceeds the %d byte limit", h, size, p.cfg.MaxBlobBytes)
		}
		lr := io.LimitReader(br, size)
		n, created, err := p.storeBlob(ctx, h, lr, size)
		if err != nil {
			if n < size && errors.Is(err, store.ErrHashMismatch) {
				return errf(client.CodeBadRequest, "blob %s: stream ended after %d of %d bytes", h, n, size)
			}
			return err
		}
		resp.Bytes += n
		if created {
			resp.Stored++
		} else {
			resp.Present++
		}
		hashes = append(hashes, h)
	}
	if err := p.recordUploads(ctx, info(r).who, hashes); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// checkRead says whether id may read blob hash: admins, auditors and
// approvers read any blob; a requester the blobs they uploaded or
// submitted and the outputs of their runs; a claim token only the
// workspace and outputs of its run. A refusal is a forbidden error naming
// the blob.
func (p *Plane) checkRead(ctx context.Context, id *identity, hash string) error {
	switch {
	case id.isRole(client.RoleAdmin, client.RoleAuditor, client.RoleApprover):
		return nil
	case id.claim != nil:
		ok, err := p.runMayRead(ctx, id.claim, hash)
		if err != nil {
			return err
		}
		if !ok {
			return errf(client.CodeForbidden, "blob %s is not part of this run's workspace or outputs", hash)
		}
		return nil
	default:
		ok, err := p.store.BlobReadableBy(ctx, hash, id.principal.ID)
		if err != nil {
			return err
		}
		if !ok {
			return errf(client.CodeForbidden, "blob %s belongs to no run of yours and was not uploaded by you", hash)
		}
		return nil
	}
}

// handleGetBlob is GET /v1/blobs/{hash}, scoped by checkRead.
func (p *Plane) handleGetBlob(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	hash := r.PathValue("hash")
	if !protocol.IsHash(hash) {
		return errf(client.CodeBadRequest, "blob name must be a sha256 hex hash")
	}
	if err := p.checkRead(ctx, info(r).who, hash); err != nil {
		return err
	}
	if _, err := p.store.GetBlobMeta(ctx, hash); errors.Is(err, store.ErrNotFound) {
		return errf(client.CodeNotFound, "no blob %s", hash)
	} else if err != nil {
		return err
	}
	rc, size, err := p.blobs.Open(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return errf(client.CodeNotFound, "no blob %s", hash)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("ETag", `"`+hash+`"`)
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
	return nil
}

// MaxFetchHashes caps one POST /v1/blobs/fetch (Config.MaxFetchBytes caps
// the size of its reply).
const MaxFetchHashes = 10_000

// handleFetchBlobs is POST /v1/blobs/fetch: many blobs in one reply, in
// the framing of the batch upload. Every hash is checked (scope, then
// existence, then the total size) before the first byte is sent, so a
// refusal is a plain error naming the first offending hash.
func (p *Plane) handleFetchBlobs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req client.FetchBlobsRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if len(req.Hashes) > MaxFetchHashes {
		return errf(client.CodeTooLarge, "at most %d hashes per call", MaxFetchHashes)
	}
	id := info(r).who
	hashes := make([]string, 0, len(req.Hashes))
	seen := make(map[string]struct{}, len(req.Hashes))
	for i, h := range req.Hashes {
		if !protocol.IsHash(h) {
			return errf(client.CodeBadRequest, "hashes[%d] is not a sha256 hex hash", i)
		}
		if _, dup := seen[h]; dup {
			continue
		}
		seen[h] = struct{}{}
		if err := p.checkRead(ctx, id, h); err != nil {
			return err
		}
		hashes = append(hashes, h)
	}
	var total int64
	for _, h := range hashes {
		m, err := p.store.GetBlobMeta(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			return errf(client.CodeNotFound, "no blob %s", h)
		}
		if err != nil {
			return err
		}
		if total += m.Size; total > p.cfg.MaxFetchBytes {
			return errf(client.CodeTooLarge, "the blobs asked for exceed %d bytes in total; ask for fewer at a time", p.cfg.MaxFetchBytes)
		}
		// The bytes can be gone while the record stays (a blob store
		// restored from an older backup, a file removed by hand): say so
		// now, as GET /v1/blobs/{hash} would, rather than break the stream
		// halfway, which the client would take for a network fault.
		if ok, err := p.blobs.Has(ctx, h); err != nil {
			return err
		} else if !ok {
			return errf(client.CodeNotFound, "no blob %s", h)
		}
	}
	w.Header().Set("Content-Type", client.BlobsContentType)
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	for _, h := range hashes {
		if err := p.writeBlobFrame(ctx, bw, h); err != nil {
			// The reply has started: cut the connection so the client sees
			// a broken stream, not a short one that looks complete.
			p.log.Warn("blob fetch broken off", "requestId", info(r).id, "blob", h, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	if err := bw.Flush(); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

// writeBlobFrame writes "<hash> <size>\n" and the blob's bytes.
func (p *Plane) writeBlobFrame(ctx context.Context, w io.Writer, hash string) error {
	rc, size, err := p.blobs.Open(ctx, hash)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := fmt.Fprintf(w, "%s %d\n", hash, size); err != nil {
		return err
	}
	n, err := io.Copy(w, io.LimitReader(rc, size))
	if err == nil && n != size {
		err = fmt.Errorf("blob %s: read %d of %d bytes", hash, n, size)
	}
	return err
}

// runMayRead reports whether a claimed run may read a blob: its workspace
// (snapshot, files, untracked files, dirty diff) or its outputs.
func (p *Plane) runMayRead(ctx context.Context, run *store.Run, hash string) (bool, error) {
	c, err := p.runContract(run)
	if err != nil {
		return false, err
	}
	m := &c.Workspace
	if hash == m.BundleHash || hash == m.DirtyDiffHash {
		return true, nil
	}
	for _, f := range m.UntrackedFiles {
		if f.Hash == hash {
			return true, nil
		}
	}
	if m.Format == protocol.SnapshotVersion {
		s, err := p.snapshot(ctx, m.BundleHash)
		if err != nil {
			return false, err
		}
		if _, ok := s.set[hash]; ok {
			return true, nil
		}
	}
	return p.store.RunHasOutput(ctx, run.ID, hash)
}
