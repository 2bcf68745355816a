package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// tmpLinkPrefix: links being made carry this name until marked (the TypeScript agent's prefix).
const tmpLinkPrefix = "kaktus-tmp-"

// linkMark is the alias (ifalias) the operator gives links it made for an object.
func linkMark(uid string) string { return "kaktus:" + uid }

// Link is what the Bridge controller reads of a link.
type Link struct {
	Name, Alias, Kind, Master string
	MTU                       int
	Up                        bool
	VlanFiltering             *bool
	link                      netlink.Link
}

// NetHost is netlink in the node's network namespace (--netns; empty: the peer's own): one
// netlink socket per family, shared by every reconcile; no thread ever switches namespace.
type NetHost struct {
	h       *netlink.Handle
	ns      netns.NsHandle
	metrics *Metrics
	log     logr.Logger
	onLink  func()
}

func NewNetHost(nsName string, m *Metrics, log logr.Logger) (*NetHost, error) {
	ns := netns.None()
	var err error
	if nsName != "" {
		if ns, err = netns.GetFromName(nsName); err != nil {
			return nil, fmt.Errorf("--netns %s: %w", nsName, err)
		}
	} else if ns, err = netns.Get(); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in network namespace %q: %w", nsName, err)
	}
	return &NetHost{h: h, ns: ns, metrics: m, log: log}, nil
}

// Links lists every link with what the controller needs (one netlink dump).
func (n *NetHost) Links() ([]Link, error) {
	links, err := n.h.LinkList()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]Link, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		info := Link{Name: a.Name, Alias: a.Alias, Kind: l.Type(), MTU: a.MTU, Up: a.Flags&unix.IFF_UP != 0, link: l}
		if a.MasterIndex != 0 {
			info.Master = byIndex[a.MasterIndex]
		}
		if b, ok := l.(*netlink.Bridge); ok {
			info.VlanFiltering = b.VlanFiltering
		}
		out = append(out, info)
	}
	return out, nil
}

func tmpLinkName() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return tmpLinkPrefix + hex.EncodeToString(b)
}

// CreateBridge adds the bridge under a temporary name, marks it, renames it and sets it up: a
// link with the real name is always marked (the TypeScript agent's sequence).
func (n *NetHost) CreateBridge(name, alias string, vlanFiltering bool) error {
	n.metrics.hostMutation("bridge", "createBridge")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: tmpLinkName()}}
	if vlanFiltering {
		br.VlanFiltering = &vlanFiltering
	}
	if err := n.h.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	undo := func(err error) error {
		_ = n.h.LinkDel(br)
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	if err := n.h.LinkSetAlias(br, alias); err != nil {
		return undo(err)
	}
	if err := n.h.LinkSetName(br, name); err != nil {
		return undo(err)
	}
	if err := n.h.LinkSetUp(br); err != nil {
		return undo(err)
	}
	return nil
}

// UpdateBridge changes VLAN filtering in place and sets the bridge up.
func (n *NetHost) UpdateBridge(l Link, vlanFiltering *bool) error {
	n.metrics.hostMutation("bridge", "updateBridge")
	if vlanFiltering != nil {
		if err := n.h.LinkModify(&netlink.Bridge{LinkAttrs: *l.link.Attrs(), VlanFiltering: vlanFiltering}); err != nil {
			return fmt.Errorf("update bridge %s: %w", l.Name, err)
		}
	}
	if err := n.h.LinkSetUp(l.link); err != nil {
		return fmt.Errorf("update bridge %s: %w", l.Name, err)
	}
	return nil
}

func (n *NetHost) SetMTU(l Link, mtu int) error {
	n.metrics.hostMutation("bridge", "updateBridge")
	if err := n.h.LinkSetMTU(l.link, mtu); err != nil {
		return fmt.Errorf("set MTU of %s: %w", l.Name, err)
	}
	return nil
}

func (n *NetHost) SetAlias(l Link, alias string) error {
	n.metrics.hostMutation("bridge", "setAlias")
	return n.h.LinkSetAlias(l.link, alias)
}

// AddPort enslaves a link to a bridge and sets it up.
func (n *NetHost) AddPort(bridge, port Link) error {
	n.metrics.hostMutation("bridge", "addPort")
	if err := n.h.LinkSetMaster(port.link, bridge.link); err != nil {
		return fmt.Errorf("add port %s to %s: %w", port.Name, bridge.Name, err)
	}
	if err := n.h.LinkSetUp(port.link); err != nil {
		return fmt.Errorf("add port %s to %s: %w", port.Name, bridge.Name, err)
	}
	return nil
}

func (n *NetHost) RemovePort(port Link) error {
	n.metrics.hostMutation("bridge", "removePort")
	return n.h.LinkSetNoMaster(port.link)
}

func (n *NetHost) DeleteLink(l Link) error {
	n.metrics.hostMutation("bridge", "deleteLink")
	if err := n.h.LinkDel(l.link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", l.Name, err)
	}
	return nil
}

// Start subscribes to link changes in the namespace and calls OnLinkChange, coalescing bursts
// (a bridge create is several netlink messages) over 100 ms like the TypeScript agent.
func (n *NetHost) Start(ctx context.Context) error {
	for ctx.Err() == nil {
		updates := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		failed := make(chan error, 1)
		err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
			Namespace: &n.ns,
			ErrorCallback: func(err error) {
				select {
				case failed <- err:
				default:
				}
			},
		})
		if err != nil {
			n.log.Info("link subscription failed; retrying", "error", err.Error())
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		n.forward(ctx, updates, failed)
		close(done)
	}
	return nil
}

func (n *NetHost) forward(ctx context.Context, updates <-chan netlink.LinkUpdate, failed <-chan error) {
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-failed:
			n.log.Info("link subscription broke; resubscribing", "error", err.Error())
			return
		case _, ok := <-updates:
			if !ok {
				return
			}
			if timer == nil {
				timer = time.After(100 * time.Millisecond)
			}
		case <-timer:
			timer = nil
			if n.onLink != nil {
				n.onLink()
			}
		}
	}
}

func (n *NetHost) NeedLeaderElection() bool { return false }
