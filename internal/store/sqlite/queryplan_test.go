package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestHotQueriesUseIndexes: the lookups the plane makes on every request
// search an index; none scans a table (whose cost grows with every run
// ever stored).
func TestHotQueriesUseIndexes(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "plane.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, q := range map[string]string{
		"claim by token":  claimByTokenQuery,
		"run by id":       "SELECT " + runCols + " FROM runs WHERE id = ?",
		"runner by token": "SELECT " + runnerCols + " FROM runners r WHERE r.token_hash = ?",
	} {
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+q, "x")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN ") {
				t.Errorf("%s: the plan scans a table: %q", name, plan)
			}
		}
		if len(plan) == 0 {
			t.Errorf("%s: no query plan", name)
		}
	}
}
