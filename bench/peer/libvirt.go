package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/go-logr/logr"
	"libvirt.org/go/libvirtxml"
)

// libvirtSocket accepts a socket path, or a libvirt URI carrying one the way the TypeScript agent
// is given it (qemu:///system?socket=PATH, qemu+unix:///system?socket=PATH).
func libvirtSocket(socketFlag, uriFlag string) (string, error) {
	if socketFlag != "" {
		return socketFlag, nil
	}
	if uriFlag == "" {
		return "/var/run/libvirt/libvirt-sock", nil
	}
	u, err := url.Parse(uriFlag)
	if err != nil {
		return "", fmt.Errorf("--libvirt-uri %q: %w", uriFlag, err)
	}
	if s := u.Query().Get("socket"); s != "" {
		return s, nil
	}
	if u.Scheme == "qemu" || u.Scheme == "qemu+unix" {
		return "/var/run/libvirt/libvirt-sock", nil
	}
	return "", fmt.Errorf("--libvirt-uri %q: only local qemu URIs (a unix socket) are supported", uriFlag)
}

// CephAuth is how QEMU reaches Ceph for RBD disks: monitors, cephx user, libvirt secret.
type CephAuth struct {
	Monitors   [][2]string
	User       string
	Key        string // base64 cephx key from the keyring
	SecretUUID string
}

// Hypervisor is one go-libvirt connection to the node's libvirtd over its unix socket, kept open
// by Start (reconnects with backoff), with domain lifecycle events forwarded as domain names.
type Hypervisor struct {
	l         *libvirt.Libvirt
	ceph      CephAuth
	metrics   *Metrics
	log       logr.Logger
	connected atomic.Bool

	mu        sync.Mutex
	listeners []func(domain string)
	onConnect []func()
}

func NewHypervisor(socket string, ceph CephAuth, m *Metrics, log logr.Logger) *Hypervisor {
	dialer := dialers.NewLocal(dialers.WithSocket(socket), dialers.WithLocalTimeout(5*time.Second))
	return &Hypervisor{l: libvirt.NewWithDialer(dialer), ceph: ceph, metrics: m, log: log}
}

var errNotConnected = errors.New("libvirt is not connected")

// OnDomainEvent registers a listener for lifecycle events (domain name); OnReconnect one for a
// connection that came back (every domain may have changed meanwhile).
func (h *Hypervisor) OnDomainEvent(fn func(domain string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.listeners = append(h.listeners, fn)
}

func (h *Hypervisor) OnReconnect(fn func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onConnect = append(h.onConnect, fn)
}

func (h *Hypervisor) Connected() bool { return h.connected.Load() }

// Start runs until ctx ends: connect, register the Ceph secret, forward events; again on loss.
func (h *Hypervisor) Start(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		if err := h.connect(ctx); err != nil {
			h.log.Info("libvirt connection failed; retrying", "error", err.Error(), "in", backoff.String())
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 500 * time.Millisecond
		h.connected.Store(true)
		h.log.Info("libvirt connected")
		if !first {
			h.mu.Lock()
			fns := append([]func(){}, h.onConnect...)
			h.mu.Unlock()
			for _, fn := range fns {
				fn()
			}
		}
		first = false
		select {
		case <-ctx.Done():
			h.connected.Store(false)
			_ = h.l.Disconnect()
			return nil
		case <-h.l.Disconnected():
			h.connected.Store(false)
			h.log.Info("libvirt connection lost; reconnecting")
		}
	}
	return nil
}

func (h *Hypervisor) NeedLeaderElection() bool { return false }

func (h *Hypervisor) connect(ctx context.Context) error {
	if err := h.l.ConnectToURI(libvirt.QEMUSystem); err != nil {
		return err
	}
	if err := h.defineCephSecret(); err != nil {
		_ = h.l.Disconnect()
		return fmt.Errorf("registering the Ceph secret: %w", err)
	}
	events, err := h.l.LifecycleEvents(ctx)
	if err != nil {
		_ = h.l.Disconnect()
		return fmt.Errorf("subscribing to domain events: %w", err)
	}
	go func() {
		for e := range events {
			h.mu.Lock()
			fns := append([]func(string){}, h.listeners...)
			h.mu.Unlock()
			for _, fn := range fns {
				fn(e.Dom.Name)
			}
		}
	}()
	return nil
}

// defineCephSecret: the same secret (UUID, usage, value) the TypeScript agent defines.
func (h *Hypervisor) defineCephSecret() error {
	key, err := base64.StdEncoding.DecodeString(h.ceph.Key)
	if err != nil {
		return fmt.Errorf("the cephx key is not base64: %w", err)
	}
	secretXML := fmt.Sprintf(`<secret ephemeral='no' private='yes'><uuid>%s</uuid><usage type='ceph'><name>kaktus client.%s</name></usage></secret>`,
		h.ceph.SecretUUID, h.ceph.User)
	h.metrics.hostMutation("libvirt", "defineSecret")
	secret, err := h.l.SecretDefineXML(secretXML, 0)
	if err != nil {
		return err
	}
	h.metrics.hostMutation("libvirt", "setSecretValue")
	return h.l.SecretSetValue(secret, key, 0)
}

// DomainInfo is what the VM controller reads of a domain.
type DomainInfo struct {
	dom        libvirt.Domain
	UUID       string
	Active     bool
	State      libvirt.DomainState
	Reason     int32
	Autostart  bool
	Definition *libvirtxml.Domain // persistent (inactive) XML
	Owner      *DomainOwner
}

func (h *Hypervisor) lookup(name string) (*DomainInfo, error) {
	if !h.Connected() {
		return nil, errNotConnected
	}
	dom, err := h.l.DomainLookupByName(name)
	if libvirt.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	state, reason, err := h.l.DomainGetState(dom, 0)
	if err != nil {
		return nil, err
	}
	autostart, err := h.l.DomainGetAutostart(dom)
	if err != nil {
		return nil, err
	}
	text, err := h.l.DomainGetXMLDesc(dom, libvirt.DomainXMLInactive)
	if err != nil {
		return nil, err
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(text); err != nil {
		return nil, fmt.Errorf("domain %s XML: %w", name, err)
	}
	s := libvirt.DomainState(state)
	return &DomainInfo{
		dom: dom, UUID: def.UUID, State: s, Reason: reason, Autostart: autostart == 1,
		Active:     s != libvirt.DomainShutoff && s != libvirt.DomainCrashed,
		Definition: &def, Owner: ownerOf(&def),
	}, nil
}

func (h *Hypervisor) define(xmlText string) error {
	h.metrics.hostMutation("libvirt", "define")
	_, err := h.l.DomainDefineXML(xmlText)
	return err
}

func (h *Hypervisor) setAutostart(d *DomainInfo, on bool) error {
	h.metrics.hostMutation("libvirt", "setAutostart")
	v := int32(0)
	if on {
		v = 1
	}
	return h.l.DomainSetAutostart(d.dom, v)
}

func (h *Hypervisor) start(d *DomainInfo) error {
	h.metrics.hostMutation("libvirt", "start")
	return h.l.DomainCreate(d.dom)
}

func (h *Hypervisor) shutdown(d *DomainInfo) error {
	h.metrics.hostMutation("libvirt", "shutdown")
	return h.l.DomainShutdown(d.dom)
}

func (h *Hypervisor) destroy(d *DomainInfo) error {
	h.metrics.hostMutation("libvirt", "destroy")
	return h.l.DomainDestroy(d.dom)
}

// undefine removes the definition with its NVRAM, managed save and snapshot metadata.
func (h *Hypervisor) undefine(d *DomainInfo) error {
	h.metrics.hostMutation("libvirt", "undefine")
	return h.l.DomainUndefineFlags(d.dom,
		libvirt.DomainUndefineManagedSave|libvirt.DomainUndefineSnapshotsMetadata|libvirt.DomainUndefineNvram)
}

// ---- domain XML ------------------------------------------------------------------------------

const kaktusNS = "https://kaktus.kowabunga.cloud/domain/v1"

// DomainOwner is the mark in <metadata> that says which object a domain was made for (the same
// element the TypeScript agent writes, so each recognises the other's domains).
type DomainOwner struct {
	Namespace string `xml:"namespace,attr"`
	Name      string `xml:"name,attr"`
	UID       string `xml:"uid,attr"`
}

func ownerOf(d *libvirtxml.Domain) *DomainOwner {
	if d.Metadata == nil {
		return nil
	}
	var m struct {
		Owner *DomainOwner `xml:"https://kaktus.kowabunga.cloud/domain/v1 owner"`
	}
	if err := xml.Unmarshal([]byte("<m>"+d.Metadata.XML+"</m>"), &m); err != nil {
		return nil
	}
	return m.Owner
}

func attr(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// DesiredDisk / DesiredNIC: a VM's disks and NICs resolved to RBD images and Linux bridges.
type DesiredDisk struct {
	Name, Pool, Image, Bus string
	BootOrder              uint
	ReadOnly               bool
}

type DesiredNIC struct {
	Name, MAC, Bridge, Model string
}

type DesiredDomain struct {
	Name, UUID, Type, CPUMode, CPUModel, Firmware, Graphics string
	SecureBoot                                              bool
	Owner                                                   DomainOwner
	MemoryKiB                                               uint
	VCPUs                                                   uint
	CPUFeatures                                             []libvirtxml.DomainCPUFeature
	Disks                                                   []DesiredDisk
	NICs                                                    []DesiredNIC
}

var targetPrefix = map[string]string{"virtio": "vd", "scsi": "sd", "sata": "sd"}

// targetName: vda, vdb, … vdz, vdaa (the kernel's naming).
func targetName(prefix string, index int) string {
	suffix := ""
	for i := index + 1; i > 0; i = (i - 1) / 26 {
		suffix = string(rune('a'+(i-1)%26)) + suffix
	}
	return prefix + suffix
}

// Hot-plug room on q35, as the TypeScript agent reserves it.
const spareRootPorts, builtInPCIDevices = 8, 6

// domainXML renders the Kaktus agent's layout (the TypeScript agent's src/domain/xml.ts): q35,
// UTC clock, RBD network disks with cephx auth, bridged NICs, serial + virtio console, guest-agent
// channel, balloon, virtio RNG, spice/vnc on 127.0.0.1, owner mark in <metadata>.
func domainXML(d DesiredDomain, ceph CephAuth) (string, error) {
	u := func(v uint) *uint { return &v }
	var disks []libvirtxml.DomainDisk
	used := map[string]int{}
	hosts := make([]libvirtxml.DomainDiskSourceHost, 0, len(ceph.Monitors))
	for _, m := range ceph.Monitors {
		hosts = append(hosts, libvirtxml.DomainDiskSourceHost{Name: m[0], Port: m[1]})
	}
	hasSCSI := false
	for _, disk := range d.Disks {
		prefix := targetPrefix[disk.Bus]
		target := targetName(prefix, used[prefix])
		used[prefix]++
		hasSCSI = hasSCSI || disk.Bus == "scsi"
		dd := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw", Cache: "none", Discard: "unmap"},
			Auth: &libvirtxml.DomainDiskAuth{Username: ceph.User,
				Secret: &libvirtxml.DomainDiskSecret{Type: "ceph", UUID: ceph.SecretUUID}},
			Source: &libvirtxml.DomainDiskSource{Network: &libvirtxml.DomainDiskSourceNetwork{
				Protocol: "rbd", Name: disk.Pool + "/" + disk.Image, Hosts: hosts}},
			Target: &libvirtxml.DomainDiskTarget{Dev: target, Bus: disk.Bus},
			Alias:  &libvirtxml.DomainAlias{Name: "ua-disk-" + disk.Name},
		}
		if disk.BootOrder > 0 {
			dd.Boot = &libvirtxml.DomainDeviceBoot{Order: disk.BootOrder}
		}
		if disk.ReadOnly {
			dd.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		disks = append(disks, dd)
	}
	var controllers []libvirtxml.DomainController
	if hasSCSI {
		controllers = append(controllers, libvirtxml.DomainController{Type: "scsi", Model: "virtio-scsi"})
	}
	controllers = append(controllers, libvirtxml.DomainController{Type: "pci", Index: u(0), Model: "pcie-root"})
	for range len(d.Disks) + len(d.NICs) + builtInPCIDevices + spareRootPorts {
		controllers = append(controllers, libvirtxml.DomainController{Type: "pci", Model: "pcie-root-port"})
	}
	var nics []libvirtxml.DomainInterface
	for _, n := range d.NICs {
		nics = append(nics, libvirtxml.DomainInterface{
			MAC:    &libvirtxml.DomainInterfaceMAC{Address: n.MAC},
			Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}},
			Model:  &libvirtxml.DomainInterfaceModel{Type: n.Model},
			Alias:  &libvirtxml.DomainAlias{Name: "ua-nic-" + n.Name},
		})
	}
	devices := &libvirtxml.DomainDeviceList{
		Disks: disks, Controllers: controllers, Interfaces: nics,
		Serials: []libvirtxml.DomainSerial{{Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainSerialTarget{Port: u(0)}}},
		Consoles: []libvirtxml.DomainConsole{{Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainConsoleTarget{Type: "virtio", Port: u(1)}}},
		Channels: []libvirtxml.DomainChannel{{Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{}},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}}}},
		MemBalloon: &libvirtxml.DomainMemBalloon{Model: "virtio"},
		RNGs: []libvirtxml.DomainRNG{{Model: "virtio",
			Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}}}},
	}
	listen := []libvirtxml.DomainGraphicListener{{Address: &libvirtxml.DomainGraphicListenerAddress{Address: "127.0.0.1"}}}
	switch d.Graphics {
	case "spice":
		devices.Graphics = []libvirtxml.DomainGraphic{{Spice: &libvirtxml.DomainGraphicSpice{AutoPort: "yes", Listeners: listen}}}
	case "vnc":
		devices.Graphics = []libvirtxml.DomainGraphic{{VNC: &libvirtxml.DomainGraphicVNC{AutoPort: "yes", Listeners: listen}}}
	}
	if d.Graphics == "spice" || d.Graphics == "vnc" {
		devices.Videos = []libvirtxml.DomainVideo{{Model: libvirtxml.DomainVideoModel{Type: "virtio"}}}
	}
	osNode := &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "q35", Type: "hvm"}}
	features := &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}}
	if d.Firmware == "efi" {
		osNode.Firmware = "efi"
		enabled := "no"
		if d.SecureBoot {
			enabled = "yes"
			osNode.Loader = &libvirtxml.DomainLoader{Secure: "yes"}
			features.SMM = &libvirtxml.DomainFeatureSMM{State: "on"}
		}
		osNode.FirmwareInfo = &libvirtxml.DomainOSFirmwareInfo{Features: []libvirtxml.DomainOSFirmwareFeature{{Enabled: enabled, Name: "secure-boot"}}}
	}
	cpu := &libvirtxml.DomainCPU{Mode: d.CPUMode, Features: d.CPUFeatures}
	if d.CPUMode == "custom" {
		cpu.Match, cpu.Model = "exact", &libvirtxml.DomainCPUModel{Fallback: "allow", Value: d.CPUModel}
	}
	dom := libvirtxml.Domain{
		Type: d.Type, Name: d.Name, UUID: d.UUID,
		Metadata: &libvirtxml.DomainMetadata{XML: fmt.Sprintf(`<kaktus:owner xmlns:kaktus="%s" namespace="%s" name="%s" uid="%s"/>`,
			kaktusNS, attr(d.Owner.Namespace), attr(d.Owner.Name), attr(d.Owner.UID))},
		Memory:        &libvirtxml.DomainMemory{Value: d.MemoryKiB, Unit: "KiB"},
		CurrentMemory: &libvirtxml.DomainCurrentMemory{Value: d.MemoryKiB, Unit: "KiB"},
		VCPU:          &libvirtxml.DomainVCPU{Placement: "static", Value: d.VCPUs},
		OS:            osNode,
		Features:      features,
		CPU:           cpu,
		Clock:         &libvirtxml.DomainClock{Offset: "utc"},
		OnPoweroff:    "destroy", OnReboot: "restart", OnCrash: "destroy",
		Devices: devices,
	}
	return dom.Marshal()
}

// drifted compares what the peer manages of a persistent definition with the desired domain
// (coarser than the TypeScript agent's model diff: memory, vCPUs, type, disks, NICs, owner).
func drifted(d DesiredDomain, def *libvirtxml.Domain) []string {
	var what []string
	if def.Type != d.Type {
		what = append(what, "type")
	}
	if def.Memory == nil || memKiB(def.Memory) != d.MemoryKiB {
		what = append(what, "memory")
	}
	if def.VCPU == nil || def.VCPU.Value != d.VCPUs {
		what = append(what, "cores")
	}
	if def.OS == nil || (def.OS.Firmware == "efi") != (d.Firmware == "efi") {
		what = append(what, "firmware")
	}
	var disks, nics []string
	if def.Devices != nil {
		for _, disk := range def.Devices.Disks {
			if disk.Source != nil && disk.Source.Network != nil {
				ro := disk.ReadOnly != nil
				order := uint(0)
				if disk.Boot != nil {
					order = disk.Boot.Order
				}
				bus := ""
				if disk.Target != nil {
					bus = disk.Target.Bus
				}
				disks = append(disks, fmt.Sprintf("%s|%s|%d|%t", disk.Source.Network.Name, bus, order, ro))
			}
		}
		for _, n := range def.Devices.Interfaces {
			mac, br, model := "", "", ""
			if n.MAC != nil {
				mac = strings.ToLower(n.MAC.Address)
			}
			if n.Source != nil && n.Source.Bridge != nil {
				br = n.Source.Bridge.Bridge
			}
			if n.Model != nil {
				model = n.Model.Type
			}
			nics = append(nics, mac+"|"+br+"|"+model)
		}
	}
	var wantDisks, wantNICs []string
	for _, disk := range d.Disks {
		wantDisks = append(wantDisks, fmt.Sprintf("%s/%s|%s|%d|%t", disk.Pool, disk.Image, disk.Bus, disk.BootOrder, disk.ReadOnly))
	}
	for _, n := range d.NICs {
		wantNICs = append(wantNICs, n.MAC+"|"+n.Bridge+"|"+n.Model)
	}
	if strings.Join(disks, ",") != strings.Join(wantDisks, ",") {
		what = append(what, "disks")
	}
	if strings.Join(nics, ",") != strings.Join(wantNICs, ",") {
		what = append(what, "interfaces")
	}
	return what
}

func memKiB(m *libvirtxml.DomainMemory) uint {
	switch m.Unit {
	case "", "KiB", "k", "K":
		return m.Value
	case "MiB", "M":
		return m.Value * 1024
	case "GiB", "G":
		return m.Value * 1024 * 1024
	case "b", "bytes":
		return (m.Value + 1023) / 1024
	}
	return 0
}
