package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func benchDomain() DesiredDomain {
	return DesiredDomain{
		Name: "bench-agent_vm-0", UUID: "6f1c0b43-4a53-4d1c-9a53-0a1b2c3d4e5f", Type: "qemu", CPUMode: "maximum",
		Firmware: "bios", Graphics: "none", MemoryKiB: 131072, VCPUs: 1,
		Owner: DomainOwner{Namespace: "bench-agent", Name: "vm-0", UID: "0e3d6b5c-1111-2222-3333-444455556666"},
		Disks: []DesiredDisk{{Name: "os", Pool: "rbd", Image: "bench-agent.vol-0", Bus: "virtio"}},
		NICs:  []DesiredNIC{{Name: "net0", MAC: "52:54:00:aa:bb:cc", Bridge: "kbr-bench", Model: "virtio"}},
	}
}

var benchCeph = CephAuth{Monitors: [][2]string{{"127.0.0.1", "6789"}}, User: "libvirt", SecretUUID: uuidFrom("kaktus-operator ceph client.libvirt")}

// The domain XML is valid for libvirt's schema, and reads back as what was asked (no drift).
func TestDomainXML(t *testing.T) {
	d := benchDomain()
	text, err := domainXML(d, benchCeph)
	if err != nil {
		t.Fatal(err)
	}
	if path, err := exec.LookPath("virt-xml-validate"); err == nil {
		f := filepath.Join(t.TempDir(), "domain.xml")
		if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(path, f, "domain").CombinedOutput(); err != nil {
			t.Fatalf("virt-xml-validate: %v\n%s\n%s", err, out, text)
		}
	}
	var back libvirtxml.Domain
	if err := back.Unmarshal(text); err != nil {
		t.Fatal(err)
	}
	if drift := drifted(d, &back); len(drift) > 0 {
		t.Fatalf("drift on its own XML: %v", drift)
	}
	if o := ownerOf(&back); o == nil || *o != d.Owner {
		t.Fatalf("owner mark read back as %+v", o)
	}
	if os.Getenv("PEER_PRINT_XML") != "" {
		t.Log("\n" + text)
	}
}

func TestHelpers(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/namespaces/ns/events":                                         "events",
		"/apis/kaktus.kowabunga.cloud/v1alpha1/namespaces/ns/volumes/v/status": "volumes",
		"/apis/kaktus.kowabunga.cloud/v1alpha1/bridges/b":                      "bridges",
		"/apis/coordination.k8s.io/v1/namespaces/kaktus-system/leases/x":       "leases",
		"/api/v1/namespaces/ns":                                                "namespaces",
	} {
		if got := resourceOf(path); got != want {
			t.Errorf("resourceOf(%s) = %s, want %s", path, got, want)
		}
	}
	for uri, want := range map[string]string{
		"qemu:///system?socket=/x/run/libvirt-sock":  "/x/run/libvirt-sock",
		"qemu+unix:///system?socket=/y/libvirt-sock": "/y/libvirt-sock",
		"qemu:///system": "/var/run/libvirt/libvirt-sock",
	} {
		if got, err := libvirtSocket("", uri); err != nil || got != want {
			t.Errorf("libvirtSocket(%s) = %s, %v", uri, got, err)
		}
	}
	conf := filepath.Join(t.TempDir(), "ceph.conf")
	_ = os.WriteFile(conf, []byte("[global]\nmon_host = [v2:10.0.0.1:3300,v1:10.0.0.1:6789] [v2:10.0.0.2:3300/0,v1:10.0.0.2:6789/0] 10.0.0.3\n"), 0o600)
	mons, err := cephMonitors(conf)
	if err != nil || len(mons) != 3 || mons[0] != [2]string{"10.0.0.1", "6789"} || mons[1] != [2]string{"10.0.0.2", "6789"} || mons[2] != [2]string{"10.0.0.3", "6789"} {
		t.Errorf("cephMonitors = %v, %v", mons, err)
	}
	if f := bridgeFinalizer("kaktus-a"); f != "kaktus.kowabunga.cloud/bridge-kaktus-a" {
		t.Errorf("bridgeFinalizer = %s", f)
	}
	if f := bridgeFinalizer(strings.Repeat("n", 60)); len(f) != len("kaktus.kowabunga.cloud/bridge-")+56 {
		t.Errorf("long bridgeFinalizer = %s", f)
	}
	if got := formatBytes(16 << 20).String(); got != "16Mi" {
		t.Errorf("formatBytes = %s", got)
	}
}
