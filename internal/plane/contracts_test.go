package plane

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"warrant.dev/warrant/internal/store"
)

// TestContractCacheIsBoundedAndForgets: the decoded-contract cache holds
// at most contractCacheSize runs, oldest out first, and drops a run when
// told it ended, so a long-lived plane holds the contracts of the runs in
// flight, not of every run it served.
func TestContractCacheIsBoundedAndForgets(t *testing.T) {
	raw, err := os.ReadFile("../../protocol/testdata/vectors/contract.json")
	if err != nil {
		t.Fatal(err)
	}
	var vec struct {
		Contract     json.RawMessage `json:"contract"`
		ContractHash string          `json:"contractHash"`
	}
	if err := json.Unmarshal(raw, &vec); err != nil {
		t.Fatal(err)
	}
	p := &Plane{contracts: newContractCache()}
	run := func(i int) *store.Run {
		return &store.Run{ID: fmt.Sprintf("run_%d", i), Contract: vec.Contract, ContractHash: vec.ContractHash}
	}
	for i := range contractCacheSize + 10 {
		if _, err := p.runContract(run(i)); err != nil {
			t.Fatal(err)
		}
	}
	c := p.contracts
	if len(c.m) != contractCacheSize || len(c.order) != contractCacheSize {
		t.Fatalf("%d entries, %d in order; want %d", len(c.m), len(c.order), contractCacheSize)
	}
	if _, ok := c.m["run_0"]; ok {
		t.Error("the oldest entry was not evicted")
	}
	first, _ := p.runContract(run(contractCacheSize))
	again, _ := p.runContract(run(contractCacheSize))
	if first != again {
		t.Error("a cached contract was decoded again")
	}
	c.forget(run(contractCacheSize).ID)
	c.forget("run_never_seen")
	if _, ok := c.m[run(contractCacheSize).ID]; ok || len(c.m) != contractCacheSize-1 || len(c.order) != contractCacheSize-1 {
		t.Fatalf("after forget: %d entries, %d in order", len(c.m), len(c.order))
	}
	for _, id := range c.order {
		if _, ok := c.m[id]; !ok {
			t.Fatalf("order lists %s, which the map does not hold", id)
		}
	}
}
