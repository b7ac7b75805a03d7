package state

import (
	"context"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Reconnection backoff of the LISTEN connection.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 5 * time.Second
)

// listenConn opens the connection that receives other instances'
// notifications. TCP keepalive probes find a dead peer (a server behind
// a dropped network path) within about half a minute; without them a
// silent connection could wait for notifications forever.
func (db *DB) listenConn(ctx context.Context) (*pgx.Conn, error) {
	cc := db.s.pg.Copy()
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}}
	cc.DialFunc = d.DialContext
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// listenLoop delivers notifications to the feed until ctx ends,
// reconnecting with exponential backoff when the connection fails.
// Whatever was announced while it was down is lost, so every reconnect
// is followed by a full reload of every topic.
func (db *DB) listenLoop(ctx context.Context, conn *pgx.Conn) {
	log := db.s.Logger
	backoff := listenMinBackoff
	connectedAt := time.Now()
	wait := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, listenMaxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for {
		if conn == nil {
			c, err := db.listenConn(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("state postgres: LISTEN connection failed; retrying", zap.Error(db.wrap("listen", err)), zap.Duration("backoff", backoff))
				if !wait() {
					return
				}
				continue
			}
			conn, connectedAt = c, time.Now()
			log.Info("state postgres: LISTEN connection restored; reloading all state")
			db.feed.publishReload()
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			_ = conn.Close(context.Background())
			conn = nil
			if ctx.Err() != nil {
				return
			}
			log.Warn("state postgres: LISTEN connection lost; reconnecting", zap.Error(db.wrap("listen", err)))
			// A connection that lasted resets the backoff; one that
			// fails at once (a server going up and down) keeps growing it.
			if time.Since(connectedAt) > listenMaxBackoff {
				backoff = listenMinBackoff
			}
			if !wait() {
				return
			}
			continue
		}
		if c, ok := parsePayload(n.Payload); ok {
			db.feed.publish(c)
		}
	}
}
