package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Metrics are the figures bench/agent.ts reads from the TypeScript agent, under the same names, so
// that one harness reads both (controller-runtime's own controller_runtime_* metrics are there too).
type Metrics struct {
	reconciles     *prometheus.CounterVec
	reconcileTime  *prometheus.HistogramVec
	apiWrites      *prometheus.CounterVec
	leaseWrites    prometheus.Counter
	hostMutations  *prometheus.CounterVec
	hostErrorCount *prometheus.CounterVec
}

func NewMetrics() *Metrics {
	m := &Metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaktus_reconcile_total",
			Help: "Reconciles by controller and result (success, requeue, error, terminal).",
		}, []string{"controller", "result"}),
		reconcileTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kaktus_reconcile_duration_seconds",
			Help:    "Reconcile durations by controller.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"controller"}),
		apiWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaktus_api_writes_total",
			Help: "Writes to the Kubernetes API by resource (object and status patches, Events), counted on the wire; Lease renewals are not included.",
		}, []string{"resource"}),
		leaseWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kaktus_lease_writes_total",
			Help: "Writes to coordination.k8s.io Leases (leader election), apart from kaktus_api_writes_total.",
		}),
		hostMutations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaktus_host_mutations_total",
			Help: "Host calls that change something, by host layer (libvirt, rbd, bridge) and operation.",
		}, []string{"host", "op"}),
		hostErrorCount: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kaktus_host_errors_total",
			Help: "Reconciles that failed on a host call, by host layer.",
		}, []string{"host"}),
	}
	// controller-runtime's registry already has process_resident_memory_bytes and friends, named as
	// the TypeScript agent names them.
	ctrlmetrics.Registry.MustRegister(m.reconciles, m.reconcileTime, m.apiWrites, m.leaseWrites, m.hostMutations, m.hostErrorCount)
	return m
}

func (m *Metrics) hostMutation(host, op string) {
	if m != nil {
		m.hostMutations.WithLabelValues(host, op).Inc()
	}
}

// timed wraps a reconciler with the kaktus_reconcile_* figures.
func (m *Metrics) timed(controller string, r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		started := time.Now()
		res, err := r.Reconcile(ctx, req)
		m.reconcileTime.WithLabelValues(controller).Observe(time.Since(started).Seconds())
		result := "success"
		switch {
		case errors.Is(err, reconcile.TerminalError(nil)):
			result = "terminal"
		case err != nil:
			result = "error"
		case res.RequeueAfter > 0:
			result = "requeue"
		}
		m.reconciles.WithLabelValues(controller, result).Inc()
		return res, err
	})
}

// countWrites counts every mutating request on the wire by resource (the plural in its path):
// the manager's client, the event recorder and leader election all share this rest.Config.
func (m *Metrics) countWrites(cfg *rest.Config) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			switch req.Method {
			case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
				if resource := resourceOf(req.URL.Path); resource == "leases" {
					m.leaseWrites.Inc()
				} else {
					m.apiWrites.WithLabelValues(resource).Inc()
				}
			}
			return rt.RoundTrip(req)
		})
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// resourceOf: /api/v1/namespaces/NS/events -> events; /apis/G/V/namespaces/NS/volumes/N/status ->
// volumes; /apis/G/V/bridges/N -> bridges; /api/v1/namespaces/NS -> namespaces.
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	i := 0
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		i = 2
	case len(parts) >= 3 && parts[0] == "apis":
		i = 3
	default:
		return "other"
	}
	if i < len(parts) && parts[i] == "namespaces" && i+2 < len(parts) {
		i += 2
	}
	if i < len(parts) {
		return parts[i]
	}
	return "other"
}
