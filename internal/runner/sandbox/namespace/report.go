package namespace

import (
	"fmt"
	"strings"
)

// Feature is one thing the namespace tier needs from the host, as Probe
// found it.
type Feature struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is Probe's answer: whether the tier is available and, feature by
// feature, why.
type Report struct {
	Available bool      `json:"available"`
	Features  []Feature `json:"features"`
}

func (r *Report) add(name string, err error, okDetail string) bool {
	f := Feature{Name: name, OK: err == nil, Detail: okDetail}
	if err != nil {
		f.Detail = err.Error()
	}
	r.Features = append(r.Features, f)
	return err == nil
}

func (r *Report) skip(name, why string) {
	r.Features = append(r.Features, Feature{Name: name, Detail: "not tried: " + why})
}

// Err is nil when the tier is available; otherwise it names every missing
// feature and why, in the order Probe checked them.
func (r *Report) Err() error {
	if r.Available {
		return nil
	}
	var missing []string
	for _, f := range r.Features {
		if !f.OK && !strings.HasPrefix(f.Detail, "not tried") {
			missing = append(missing, f.Name+": "+f.Detail)
		}
	}
	if len(missing) == 0 {
		missing = append(missing, "unknown reason")
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, strings.Join(missing, "; "))
}
