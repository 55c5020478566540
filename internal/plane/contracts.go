package plane

import (
	"fmt"
	"slices"
	"sync"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// contractCacheSize bounds the decoded contracts kept in memory (8 to
// 10 KB each, with the tree kept for re-encoding): more than the runs in
// flight on any plane. A run's entry is dropped when it completes.
const contractCacheSize = 1024

// contractCache keeps decoded contracts by run id. A contract never
// changes once it is issued, and an entry is used only for the run's
// stored contract hash, so a hit is always the stored contract. Entries
// are shared: callers must not modify them.
type contractCache struct {
	mu    sync.Mutex
	m     map[string]cachedContract
	order []string // run ids, oldest first (evicted first)
}

type cachedContract struct {
	hash     string
	contract *protocol.Contract
}

func newContractCache() *contractCache {
	return &contractCache{m: make(map[string]cachedContract, contractCacheSize)}
}

// runContract returns the run's decoded contract (read-only; cached). Every
// request made with a claim token needs it, and decoding it is most of the
// cost of authorising one.
func (p *Plane) runContract(run *store.Run) (*protocol.Contract, error) {
	c := p.contracts
	c.mu.Lock()
	e, ok := c.m[run.ID]
	c.mu.Unlock()
	if ok && e.hash == run.ContractHash && run.ContractHash != "" {
		return e.contract, nil
	}
	if len(run.Contract) == 0 {
		return nil, fmt.Errorf("run %s has no contract", run.ID)
	}
	contract, err := protocol.ParseContract(run.Contract)
	if err != nil {
		return nil, fmt.Errorf("stored contract of %s: %w", run.ID, err)
	}
	if run.ContractHash == "" {
		return contract, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[run.ID]; !ok {
		for len(c.order) >= contractCacheSize {
			delete(c.m, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, run.ID)
	}
	c.m[run.ID] = cachedContract{hash: run.ContractHash, contract: contract}
	return contract, nil
}

// forget drops a run's contract: the run has ended, and its runner, the
// only frequent reader, is done with it.
func (c *contractCache) forget(runID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[runID]; !ok {
		return
	}
	delete(c.m, runID)
	if i := slices.Index(c.order, runID); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
}
