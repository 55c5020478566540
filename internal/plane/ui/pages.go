package ui

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// pageSize is the number of runs per page of the run list.
const pageSize = 25

// Notices shown after a POST redirected, by code.
var notices = map[string]string{
	"approved": "Approved. The run is queued for a runner; its contract names you as approver.",
	"denied":   "Denied. The run failed with policy_denied and your reason is on its record.",
	"revoked":  "Runner revoked. Its token no longer works; its in-flight runs fail when their leases lapse.",
}

// --- run list ---

type runsPage struct {
	page
	Filter    client.ListRunsOptions
	States    []string
	Agents    []string
	Runs      []client.Run
	Next      string // URL of the next page, or ""
	First     string // URL of the first page when not on it
	Stream    string // the live stream URL
	Filtered  bool
	Requester bool
}

func (u *UI) handleRuns(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	q := r.URL.Query()
	f := client.ListRunsOptions{
		State: q.Get("state"), Pool: strings.TrimSpace(q.Get("pool")), Agent: q.Get("agent"),
		RequestedBy: strings.TrimSpace(q.Get("requestedBy")), Cursor: q.Get("cursor"), Limit: pageSize,
	}
	rendered := time.Now()
	list, err := s.api.ListRuns(apiContext(r), f)
	if err != nil {
		u.apiError(w, r, s, err)
		return
	}
	p := runsPage{page: newPage(s, "Runs", "runs"), Filter: f, States: protocol.RunStates, Agents: protocol.AgentKinds, Runs: list.Runs,
		Filtered: f.State != "" || f.Pool != "" || f.Agent != "" || f.RequestedBy != "", Requester: s.me.Role == client.RoleRequester}
	filters := url.Values{}
	for k, v := range map[string]string{"state": f.State, "pool": f.Pool, "agent": f.Agent, "requestedBy": f.RequestedBy} {
		if v != "" {
			filters.Set(k, v)
		}
	}
	if list.Next != "" {
		nq := cloneValues(filters)
		nq.Set("cursor", list.Next)
		p.Next = Prefix + "?" + nq.Encode()
	}
	if f.Cursor != "" {
		p.First = Prefix
		if len(filters) > 0 {
			p.First += "?" + filters.Encode()
		}
	}
	// The stream starts where this render did, so no change between the
	// render and the script connecting is missed.
	sq := cloneValues(filters)
	sq.Set("since", protocol.FormatTime(rendered))
	p.Stream = Prefix + "stream/runs?" + sq.Encode()
	u.render(w, r, http.StatusOK, "runs", &p)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// --- approvals ---

type approvalsPage struct {
	page
	Pending   []pendingRun
	CanDecide bool
	More      bool
}

type pendingRun struct {
	Run  client.Run
	Mine bool // the viewer requested it: another approver must decide
}

func (u *UI) handleApprovals(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	list, err := s.api.ListRuns(apiContext(r), client.ListRunsOptions{State: protocol.StateAwaitingApproval, Limit: 100})
	if err != nil {
		u.apiError(w, r, s, err)
		return
	}
	p := approvalsPage{page: newPage(s, "Approvals", "approvals"), CanDecide: s.may(client.RoleApprover, client.RoleAdmin), More: list.Next != ""}
	p.Notice = notices[r.URL.Query().Get("done")]
	runs := list.Runs
	// Oldest first: the queue is worked from the front.
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].CreatedAt < runs[j].CreatedAt })
	for _, run := range runs {
		p.Pending = append(p.Pending, pendingRun{Run: run, Mine: run.RequestedBy.ID == s.me.Name})
	}
	u.render(w, r, http.StatusOK, "approvals", &p)
}

// handleDecision is POST /ui/runs/{id}/approve and /deny.
func (u *UI) handleDecision(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil || !u.checkPost(w, r, s, s.csrf) {
		return
	}
	id := r.PathValue("id")
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if len(reason) > 2000 {
		u.renderError(w, r, s, http.StatusBadRequest, "The reason is too long (2000 characters at most).")
		return
	}
	var err error
	done := "approved"
	if strings.HasSuffix(r.URL.Path, "/deny") {
		done = "denied"
		_, err = s.api.Deny(apiContext(r), id, reason)
	} else {
		_, err = s.api.Approve(apiContext(r), id, reason)
	}
	if err != nil {
		u.apiError(w, r, s, err)
		return
	}
	http.Redirect(w, r, Prefix+"runs/"+pathEscape(id)+"?done="+done, http.StatusSeeOther)
}

// --- runners ---

type runnersPage struct {
	page
	Runners   []client.Runner
	Pools     []poolSummary
	CanRevoke bool
	Forbidden string
}

type poolSummary struct {
	Pool     string
	Active   int
	Revoked  int
	InFlight int
	Tiers    []string
}

func (u *UI) handleRunners(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil {
		return
	}
	p := runnersPage{page: newPage(s, "Runners", "runners"), CanRevoke: s.may(client.RoleAdmin)}
	p.Notice = notices[r.URL.Query().Get("done")]
	list, err := s.api.ListRunners(apiContext(r))
	if errors.Is(err, client.ErrForbidden) {
		p.Forbidden = "Your role (" + s.me.Role + ") may not list runners. Admins, auditors and approvers may."
		u.render(w, r, http.StatusForbidden, "runners", &p)
		return
	}
	if err != nil {
		u.apiError(w, r, s, err)
		return
	}
	// Active runners first, then by pool and name.
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if (a.RevokedAt == "") != (b.RevokedAt == "") {
			return a.RevokedAt == ""
		}
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		return a.Name+a.ID < b.Name+b.ID
	})
	p.Runners = list
	pools := map[string]*poolSummary{}
	for _, rn := range list {
		ps := pools[rn.Pool]
		if ps == nil {
			ps = &poolSummary{Pool: rn.Pool}
			pools[rn.Pool] = ps
		}
		if rn.RevokedAt != "" {
			ps.Revoked++
			continue
		}
		ps.Active++
		ps.InFlight += rn.InFlight
		for _, t := range rn.Tiers {
			if !slices.Contains(ps.Tiers, t) {
				ps.Tiers = append(ps.Tiers, t)
			}
		}
	}
	for _, ps := range pools {
		sort.Strings(ps.Tiers)
		p.Pools = append(p.Pools, *ps)
	}
	sort.Slice(p.Pools, func(i, j int) bool { return p.Pools[i].Pool < p.Pools[j].Pool })
	u.render(w, r, http.StatusOK, "runners", &p)
}

func (u *UI) handleRevokeRunner(w http.ResponseWriter, r *http.Request) {
	s := u.session(w, r)
	if s == nil || !u.checkPost(w, r, s, s.csrf) {
		return
	}
	if err := s.api.RevokeRunner(apiContext(r), r.PathValue("id")); err != nil {
		u.apiError(w, r, s, err)
		return
	}
	http.Redirect(w, r, Prefix+"runners?done=revoked", http.StatusSeeOther)
}
