// Command peer is the benchmark peer of kaktus-operator: a small controller-runtime operator that
// reconciles the same three CRDs (VirtualMachine, Volume, Bridge) as the TypeScript agent, doing
// the same host work (RBD images through librbd, libvirt domains through libvirtd's socket, Linux
// bridges through netlink in the node's network namespace), so that both can be measured side by
// side. See README.md for what it does not do.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kaktus "kaktus.kowabunga.cloud/bench-peer/api/v1alpha1"
)

type options struct {
	node, libvirtSocket, libvirtURI, cephConf, cephUser, cephKeyring, pools, netns string
	domainType, cpuMode, metricsAddress, leaseNamespace, leaseName, logLevel       string
	workers, resync, syncPeriod, leaseDuration                                     int
	leaderElect, volumes                                                           bool
}

func env(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func parseFlags() *options {
	o := &options{}
	fs := flag.CommandLine // controller-runtime registers --kubeconfig on it
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "peer: the kaktus-operator benchmark peer (controller-runtime), one process per node.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.node, "node", env("KAKTUS_NODE", "NODE_NAME"), "Kubernetes Node this peer runs for (required) [KAKTUS_NODE, NODE_NAME]")
	fs.StringVar(&o.libvirtSocket, "libvirt-socket", "", "libvirtd's unix socket (default: from --libvirt-uri, else /var/run/libvirt/libvirt-sock)")
	fs.StringVar(&o.libvirtURI, "libvirt-uri", env("KAKTUS_LIBVIRT_URI"), "a local libvirt URI, as the TypeScript agent takes it: qemu:///system?socket=PATH")
	fs.StringVar(&o.cephConf, "ceph-conf", orDefault(env("CEPH_CONF"), "/etc/ceph/ceph.conf"), "ceph.conf (mon_host is read for the domains' RBD disks)")
	fs.StringVar(&o.cephUser, "ceph-user", orDefault(env("KAKTUS_CEPH_USER"), "libvirt"), "cephx user, without \"client.\"")
	fs.StringVar(&o.cephKeyring, "ceph-keyring", env("KAKTUS_CEPH_KEYRING"), "keyring of the cephx user (default /etc/ceph/ceph.client.USER.keyring)")
	fs.StringVar(&o.pools, "pools", orDefault(env("KAKTUS_POOLS"), "rbd"), "comma-separated pools Volumes may live in")
	fs.StringVar(&o.netns, "netns", env("KAKTUS_NETNS"), "network namespace of the node's bridges (/run/netns/NAME); empty: the peer's own")
	fs.StringVar(&o.domainType, "domain-type", "qemu", "libvirt domain type: qemu (TCG, works everywhere) or kvm; the peer runs no accelerator probe")
	fs.StringVar(&o.cpuMode, "cpu-mode", "", "CPU mode of VMs that name none (default: maximum for qemu, host-passthrough for kvm)")
	fs.IntVar(&o.workers, "workers", 4, "concurrent reconciles per controller (MaxConcurrentReconciles)")
	fs.IntVar(&o.resync, "resync", 300, "seconds: a converged object is reconciled again this often (drift check, RequeueAfter)")
	fs.IntVar(&o.syncPeriod, "sync-period", 3600, "seconds: the cache's SyncPeriod (every cached object is queued again)")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "run the Volume controller only while this process holds the Lease (the VM and Bridge controllers always run)")
	fs.BoolVar(&o.volumes, "volumes", true, "run the Volume controller in this process at all")
	fs.StringVar(&o.leaseNamespace, "lease-namespace", orDefault(env("KAKTUS_LEASE_NAMESPACE"), "kaktus-system"), "namespace of the Volume controller's Lease")
	fs.StringVar(&o.leaseName, "lease-name", "kaktus-peer-volumes", "name of the Volume controller's Lease (not the TypeScript agent's)")
	fs.IntVar(&o.leaseDuration, "lease-duration", 15, "seconds; renew deadline 2/3 of it, retry period 2 s (as the TypeScript agent)")
	fs.StringVar(&o.metricsAddress, "metrics-address", orDefault(env("KAKTUS_METRICS_ADDRESS"), "127.0.0.1:9464"), "/metrics, /healthz and /readyz")
	fs.StringVar(&o.logLevel, "log-level", orDefault(env("KAKTUS_LOG_LEVEL"), "info"), "debug, info, warn or error")
	flag.Parse()
	return o
}

func main() {
	if err := run(parseFlags()); err != nil {
		fmt.Fprintf(os.Stderr, "peer: %v\n", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	level, err := zapcore.ParseLevel(o.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	// Errors are logged without stack traces, as the TypeScript agent logs them.
	ctrl.SetLogger(zap.New(zap.Level(level), zap.StacktraceLevel(zapcore.DPanicLevel)))
	log := ctrl.Log.WithName("peer").WithValues("node", o.node)

	if o.node == "" {
		return errors.New("--node (or NODE_NAME) is required: the Kubernetes Node this peer runs for")
	}
	for _, v := range []struct {
		name  string
		value int
	}{{"workers", o.workers}, {"resync", o.resync}, {"sync-period", o.syncPeriod}, {"lease-duration", o.leaseDuration}} {
		if v.value <= 0 {
			return fmt.Errorf("--%s must be a positive integer, not %d", v.name, v.value)
		}
	}
	if o.domainType != "qemu" && o.domainType != "kvm" {
		return fmt.Errorf("--domain-type must be qemu or kvm, not %q", o.domainType)
	}
	if o.cpuMode == "" {
		o.cpuMode = map[string]string{"qemu": "maximum", "kvm": "host-passthrough"}[o.domainType]
	}
	if kc := flag.Lookup("kubeconfig").Value.String(); kc != "" {
		if _, err := os.Stat(kc); err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no Kubernetes configuration (give --kubeconfig): %w", err)
	}
	socket, err := libvirtSocket(o.libvirtSocket, o.libvirtURI)
	if err != nil {
		return err
	}
	if o.cephKeyring == "" {
		o.cephKeyring = "/etc/ceph/ceph.client." + o.cephUser + ".keyring"
	}
	monitors, err := cephMonitors(o.cephConf)
	if err != nil {
		return fmt.Errorf("--ceph-conf: %w", err)
	}
	key, err := cephKey(o.cephKeyring)
	if err != nil {
		return fmt.Errorf("--ceph-keyring: %w", err)
	}

	metrics := NewMetrics()
	metrics.countWrites(cfg)
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := kaktus.AddToScheme(scheme); err != nil {
		return err
	}
	lease := time.Duration(o.leaseDuration) * time.Second
	renew := lease * 2 / 3
	retry := min(2*time.Second, renew*3/4)
	syncPeriod := time.Duration(o.syncPeriod) * time.Second
	var mgr ctrl.Manager
	ready := func(_ *http.Request) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if mgr == nil || !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("caches not synced")
		}
		return nil
	}
	hv := NewHypervisor(socket, CephAuth{Monitors: monitors, User: o.cephUser, Key: key,
		SecretUUID: uuidFrom("kaktus-operator ceph client." + o.cephUser)}, metrics, ctrl.Log.WithName("libvirt"))
	mgr, err = ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Cache:  cache.Options{SyncPeriod: &syncPeriod},
		Metrics: metricsserver.Options{BindAddress: o.metricsAddress, ExtraHandlers: map[string]http.Handler{
			"/healthz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }),
			"/readyz": http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				err := ready(req)
				if err == nil && !hv.Connected() {
					err = errors.New("libvirt not connected")
				}
				if err != nil {
					http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
					return
				}
				_, _ = w.Write([]byte("ok\n"))
			}),
		}},
		LeaderElection:                o.leaderElect && o.volumes,
		LeaderElectionID:              o.leaseName,
		LeaderElectionNamespace:       o.leaseNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &lease,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &retry,
		GracefulShutdownTimeout:       ptr.To(60 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := indexVMs(ctx, mgr); err != nil {
		return err
	}
	if err := mgr.Add(hv); err != nil {
		return err
	}
	net, err := NewNetHost(o.netns, metrics, ctrl.Log.WithName("netlink"))
	if err != nil {
		return err
	}
	rbd := NewRbd(o.cephConf, o.cephUser, o.cephKeyring, metrics)
	defer rbd.Close()
	resync := time.Duration(o.resync) * time.Second
	events := mgr.GetEventRecorder("kaktus-peer")
	if err := (&VMReconciler{Client: mgr.GetClient(), Node: o.node, HV: hv, DomainType: o.domainType, CPUMode: o.cpuMode,
		Resync: resync, Events: events}).SetupWithManager(mgr, o.workers, metrics); err != nil {
		return err
	}
	if err := (&BridgeReconciler{Client: mgr.GetClient(), Node: o.node, Net: net, Resync: resync, Events: events}).
		SetupWithManager(mgr, o.workers, metrics); err != nil {
		return err
	}
	if o.volumes {
		if err := (&VolumeReconciler{Client: mgr.GetClient(), Rbd: rbd, Pools: splitList(o.pools), Resync: resync, Events: events}).
			SetupWithManager(mgr, o.workers, metrics); err != nil {
			return err
		}
	}
	log.Info("starting", "metrics", o.metricsAddress, "libvirt", socket, "netns", o.netns, "workers", o.workers,
		"resync", resync.String(), "leaderElect", o.leaderElect && o.volumes, "volumes", o.volumes)
	return mgr.Start(ctx)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
