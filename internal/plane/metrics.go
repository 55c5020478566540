package plane

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"warrant.dev/warrant/protocol"
)

// metrics are the plane's Prometheus metrics, on a private registry.
type metrics struct {
	reg          *prometheus.Registry
	httpDuration *prometheus.HistogramVec
	claimLatency prometheus.Histogram
	runsEnded    *prometheus.CounterVec
	submitted    *prometheus.CounterVec
}

// runsCollector reports runs by state from the store at scrape time.
type runsCollector struct {
	p    *Plane
	desc *prometheus.Desc
}

func (c runsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c runsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.p.store.CountRunsByState(ctx)
	if err != nil {
		c.p.log.Warn("metrics: count runs", "err", err)
		return
	}
	for _, st := range protocol.RunStates {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[st]), st)
	}
}

func newMetrics(p *Plane) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warrant_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern and status code (long polls included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "code"}),
		claimLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "warrant_claim_latency_seconds",
			Help:    "Time from a run's contract being issued to a runner claiming it.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		runsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warrant_runs_ended_total",
			Help: "Runs that reached a terminal state, by state and failure class.",
		}, []string{"state", "failure"}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warrant_runs_submitted_total",
			Help: "Run requests by policy decision (dry runs excluded).",
		}, []string{"decision"}),
	}
	m.reg.MustRegister(m.httpDuration, m.claimLatency, m.runsEnded, m.submitted,
		runsCollector{p: p, desc: prometheus.NewDesc("warrant_runs", "Runs by state.", []string{"state"}, nil)},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeHTTP(route string, status int, d time.Duration) {
	m.httpDuration.WithLabelValues(route, strconv.Itoa(status)).Observe(d.Seconds())
}

func (m *metrics) ended(state, failure string) { m.runsEnded.WithLabelValues(state, failure).Inc() }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
