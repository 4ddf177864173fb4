package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/fedgate/fedgate/apis/identity"
	"github.com/fedgate/fedgate/hub/pki"
	"github.com/fedgate/fedgate/hub/store"
)

// ErrCAMismatch: this replica's CA is not the one recorded in etcd by the replicas sharing it. A replica that signed
// with its own CA would hand out cluster certificates the other replicas refuse, and serve a certificate spokes
// joined elsewhere cannot verify, so it refuses to start instead.
var ErrCAMismatch = errors.New("hub CA differs from the one the other hub replicas use")

// caRecord is the public half of ca, as stored.
func caRecord(ca *pki.Authority) store.CARecord {
	rec := store.CARecord{Active: ca.ActiveHash(), Bundle: string(ca.BundlePEM())}
	for _, c := range ca.Certificates() {
		rec.Pins = append(rec.Pins, identity.CAHash(c))
	}
	return rec
}

// agreeCA makes this replica agree with the CA recorded in etcd, or refuses: the first replica records its CA; a
// replica with the same active CA agrees; one whose bundle still holds the recorded CA behind a new active one (a
// rotation given with --ca-cert) records its bundle; any other is ErrCAMismatch, naming the flags that fix it.
func agreeCA(ctx context.Context, st *store.Store, ca *pki.Authority, log *slog.Logger) error {
	mine := caRecord(ca)
	for attempt := 0; attempt < 5; attempt++ {
		stored, modRev, created, err := st.ClaimCA(ctx, mine)
		if err != nil {
			return err
		}
		switch {
		case created:
			log.Info("recorded the hub CA for every replica sharing this etcd", "caHash", mine.Active, "key", store.CAKey)
			return nil
		case stored.Active == mine.Active:
			return nil
		case slices.Contains(mine.Pins[1:], stored.Active):
			ok, err := st.ReplaceCA(ctx, mine, modRev)
			if err != nil {
				return err
			}
			if ok {
				log.Info("recorded the rotated hub CA", "caHash", mine.Active, "previous", stored.Active)
				return nil
			}
			// Another replica changed the record meanwhile: decide again on what it wrote.
		case slices.Contains(stored.Pins, mine.Active):
			return fmt.Errorf("%w: this replica's CA %s was rotated out (the replicas now sign with %s, recorded at %s %s): "+
				"start it with the current bundle and key, --ca-cert and --ca-key", ErrCAMismatch, mine.Active, stored.Active,
				store.CAKey, stored.RecordedAt.Format("2006-01-02T15:04:05Z"))
		default:
			return fmt.Errorf("%w: this replica's CA is %s, the replicas sharing this etcd sign with %s (recorded at %s %s); "+
				"give every replica the same CA with --ca-cert and --ca-key (the first replica created its CA in its "+
				"--pki-dir, by default <data-dir>/pki: ca.crt and ca.key); to move to a new CA, give a bundle with the "+
				"new CA first and the recorded one after it", ErrCAMismatch, mine.Active, stored.Active,
				store.CAKey, stored.RecordedAt.Format("2006-01-02T15:04:05Z"))
		}
	}
	return errors.New("recording the hub CA: the record kept changing under this replica")
}
