package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fedgate/fedgate/apis/hubv1alpha1"
	"github.com/fedgate/fedgate/hub/store"
)

// LastSeenRefresh is how often a connected cluster's ManagedCluster status.lastSeen is brought up to date (at the
// first pass after it is this old).
const LastSeenRefresh = time.Minute

// ClusterLabelsAnnotation lists, comma-separated, the metadata.labels keys of a ManagedCluster that the hub copied
// from the cluster's labels, so that a label the cluster lost is removed there without touching labels others set.
const ClusterLabelsAnnotation = "hub.fedgate.io/cluster-labels"

// member is one cluster as the hub knows it: joined (a join record), connected at least once (a cluster record), or
// both.
type member struct {
	name     string
	labels   map[string]string
	eastWest string
	joinedAt time.Time
	joined   bool
	st       *store.ClusterStatus // nil while the cluster's spoke has never connected
}

// members merges join records and cluster records the way hubctl get clusters does: the join's labels win (the
// admin admitted the cluster with them) over those its spoke says in its hello; the spoke's east-west address wins.
func members(joined map[string]Member, clusters []store.ClusterStatus) []member {
	byName := map[string]*member{}
	for name, j := range joined {
		byName[name] = &member{name: name, labels: maps.Clone(j.Labels), eastWest: j.EastWestAddress, joinedAt: j.JoinedAt, joined: true}
	}
	for i := range clusters {
		c := &clusters[i]
		m := byName[c.Record.Name]
		if m == nil {
			m = &member{name: c.Record.Name, joinedAt: c.Record.JoinedAt}
			byName[m.name] = m
		}
		m.st = c
		labels := maps.Clone(c.Record.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, m.labels)
		m.labels = labels
		if c.Record.EastWestAddress != "" {
			m.eastWest = c.Record.EastWestAddress
		}
	}
	out := make([]member, 0, len(byName))
	for _, m := range byName {
		if len(m.labels) == 0 {
			m.labels = nil
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// syncClusters keeps one ManagedCluster per cluster the hub knows — from its join on, before its spoke first
// connects — and deletes the ManagedClusters of clusters the hub no longer knows. One cluster's failed write does not
// keep the others from being written.
func (s *Syncer) syncClusters(ctx context.Context, clusters []store.ClusterStatus) error {
	var joined map[string]Member
	if s.o.Members != nil {
		var err error
		if joined, err = s.o.Members(ctx); err != nil {
			return fmt.Errorf("join records: %w", err)
		}
	}
	var list hubv1alpha1.ManagedClusterList
	served, err := s.reader.list(ctx, managedClusterKind, &list)
	if err != nil {
		return fmt.Errorf("list ManagedClusters: %w", err)
	}
	if !served {
		return nil // CRD not installed in the hub cluster
	}
	existing := map[string]*hubv1alpha1.ManagedCluster{}
	for i := range list.Items {
		existing[list.Items[i].Name] = &list.Items[i]
	}
	var errs []error
	for _, m := range members(joined, clusters) {
		mc := existing[m.name]
		delete(existing, m.name)
		if err := s.syncCluster(ctx, m, mc); err != nil {
			errs = append(errs, err)
		}
	}
	for name, mc := range existing {
		if err := s.c.Delete(ctx, mc); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete ManagedCluster %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Syncer) syncCluster(ctx context.Context, m member, mc *hubv1alpha1.ManagedCluster) error {
	if mc == nil {
		mc = &hubv1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: m.name}}
		mc.Spec.EastWestAddress = m.eastWest
		mc.Spec.Labels = m.labels
		setClusterLabels(mc, m.labels)
		if err := s.c.Create(ctx, mc); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil // the cache has not seen it yet; the next pass has
			}
			return fmt.Errorf("create ManagedCluster %s: %w", m.name, err)
		}
	} else {
		before := mc.DeepCopy()
		mc.Spec.EastWestAddress = m.eastWest
		mc.Spec.Labels = m.labels
		setClusterLabels(mc, m.labels)
		if !equalJSON(before.Spec, mc.Spec) || !maps.Equal(before.Labels, mc.Labels) || !maps.Equal(before.Annotations, mc.Annotations) {
			if err := s.c.Update(ctx, mc); err != nil {
				if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
					return nil // changed meanwhile: its event brings another pass
				}
				return fmt.Errorf("update ManagedCluster %s: %w", m.name, err)
			}
		}
	}
	want := s.clusterStatus(m, mc)
	if equalJSON(want, &mc.Status) {
		return nil
	}
	mc.Status = *want
	if err := s.c.Status().Update(ctx, mc); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update ManagedCluster %s status: %w", m.name, err)
	}
	return nil
}

// clusterStatus is mc's status as the hub sees the cluster now.
func (s *Syncer) clusterStatus(m member, mc *hubv1alpha1.ManagedCluster) *hubv1alpha1.ManagedClusterStatus {
	now := s.o.Now().UTC().Truncate(time.Second)
	want := mc.Status.DeepCopy()
	if !m.joinedAt.IsZero() {
		t := metav1.NewTime(m.joinedAt.UTC().Truncate(time.Second))
		want.JoinedAt = &t
	}
	want.Connected = false
	if c := m.st; c != nil {
		want.Connected = c.Connected
		want.AgentVersion = c.Record.AgentVersion
		want.GatewayAddresses = slices.Clone(c.Record.GatewayAddresses)
		want.SentRevision, want.AckedRevision, want.NackedRevision = c.Sync.SentRevision, c.Sync.AckedRevision, c.Sync.NackedRevision
		want.LastNackError = c.Sync.LastNackError
		switch {
		case c.Connected:
			if want.LastSeen == nil || now.Sub(want.LastSeen.Time) >= LastSeenRefresh {
				t := metav1.NewTime(now)
				want.LastSeen = &t
			}
		case !c.Record.LastSeen.IsZero() && (want.LastSeen == nil || c.Record.LastSeen.After(want.LastSeen.Time)):
			// When its last stream ended (or its last hello, when the hub that held the stream died).
			t := metav1.NewTime(c.Record.LastSeen.UTC().Truncate(time.Second))
			want.LastSeen = &t
		}
	}
	avail := metav1.Condition{Type: "Available", Status: metav1.ConditionFalse, Reason: "Disconnected", Message: "the cluster's spoke is not connected", ObservedGeneration: mc.Generation}
	switch c := m.st; {
	case c == nil:
		avail.Reason, avail.Message = "NeverConnected", "the cluster joined; its spoke has not connected yet"
	case c.Connected && c.Sync.AckedRevision >= c.Sync.SentRevision && c.Sync.AckedRevision > 0:
		avail.Status, avail.Reason, avail.Message = metav1.ConditionTrue, "Serving", fmt.Sprintf("serving graph revision %d", c.Sync.AckedRevision)
	case c.Connected:
		avail.Reason, avail.Message = "Syncing", fmt.Sprintf("sent revision %d, acknowledged %d", c.Sync.SentRevision, c.Sync.AckedRevision)
	}
	meta.SetStatusCondition(&want.Conditions, avail)
	joined := metav1.Condition{Type: "Joined", Status: metav1.ConditionTrue, Reason: "Joined", Message: "the cluster joined the hub", ObservedGeneration: mc.Generation}
	if !m.joined {
		joined.Reason, joined.Message = "Connected", "the cluster's spoke connected; the hub has no join record of it"
	}
	meta.SetStatusCondition(&want.Conditions, joined)
	return want
}

// setClusterLabels makes mc's metadata.labels carry the cluster's labels that are valid Kubernetes labels, removing
// those it carried for the cluster before and the cluster no longer has; others' labels are left alone.
func setClusterLabels(mc *hubv1alpha1.ManagedCluster, labels map[string]string) {
	ours := map[string]string{}
	for k, v := range labels {
		if len(validation.IsQualifiedName(k)) == 0 && len(validation.IsValidLabelValue(v)) == 0 {
			ours[k] = v
		}
	}
	if prev := mc.Annotations[ClusterLabelsAnnotation]; prev != "" {
		for _, k := range strings.Split(prev, ",") {
			if _, keep := ours[k]; !keep {
				delete(mc.Labels, k)
			}
		}
	}
	keys := slices.Sorted(maps.Keys(ours))
	if len(ours) > 0 && mc.Labels == nil {
		mc.Labels = map[string]string{}
	}
	maps.Copy(mc.Labels, ours)
	if len(mc.Labels) == 0 {
		mc.Labels = nil
	}
	if len(keys) == 0 {
		delete(mc.Annotations, ClusterLabelsAnnotation)
		if len(mc.Annotations) == 0 {
			mc.Annotations = nil
		}
		return
	}
	if mc.Annotations == nil {
		mc.Annotations = map[string]string{}
	}
	mc.Annotations[ClusterLabelsAnnotation] = strings.Join(keys, ",")
}
