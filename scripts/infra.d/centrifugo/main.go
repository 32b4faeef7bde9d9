// centrifugo-peer: the peer Confab's benchmarks are measured against.
//
// Centrifugo's own module (github.com/centrifugal/centrifugo) is not served by
// the module proxy this project can reach, so the peer is Centrifugo's engine,
// the github.com/centrifugal/centrifuge library (pinned in scripts/versions.env),
// behind this small main that does what a Centrifugo configured for the
// benchmark would: HS256 JWT connection tokens (`sub` is the user), the JSON
// protocol over WebSocket at /connection/websocket, subscribe to any channel
// except other users' personal ones, publish from a client to a channel.
// Personal channels are "user:<name>", readable only by <name> (Centrifugo's
// user-limited channels, "#<name>", do the same).
//
//	centrifugo-peer -addr 127.0.0.1:18000 -secret SECRET
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/centrifugal/centrifuge"
)

type claims struct {
	Sub string `json:"sub"`
	Exp int64  `json:"exp"`
}

// verifyHS256 checks an HS256 JWT and returns its subject.
func verifyHS256(token string, secret []byte) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("malformed token")
	}
	var header struct {
		Alg string `json:"alg"`
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(raw, &header) != nil || header.Alg != "HS256" {
		return "", errors.New("bad token header")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", errors.New("bad signature")
	}
	raw, err = base64.RawURLEncoding.DecodeString(parts[1])
	var c claims
	if err != nil || json.Unmarshal(raw, &c) != nil || c.Sub == "" {
		return "", errors.New("bad claims")
	}
	if c.Exp != 0 && c.Exp < time.Now().Unix() {
		return "", errors.New("token expired")
	}
	return c.Sub, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "listen address (host:port; port 0 picks one and prints it)")
	secret := flag.String("secret", os.Getenv("CENTRIFUGO_TOKEN_HMAC_SECRET_KEY"), "HS256 secret for connection tokens")
	flag.Parse()
	if *secret == "" {
		log.Fatal("-secret (or CENTRIFUGO_TOKEN_HMAC_SECRET_KEY) is required")
	}
	key := []byte(*secret)

	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelError})
	if err != nil {
		log.Fatal(err)
	}
	node.OnConnecting(func(_ context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		user, err := verifyHS256(e.Token, key)
		if err != nil {
			return centrifuge.ConnectReply{}, centrifuge.DisconnectInvalidToken
		}
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{UserID: user}}, nil
	})
	node.OnConnect(func(client *centrifuge.Client) {
		client.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			if owner, ok := strings.CutPrefix(e.Channel, "user:"); ok && owner != client.UserID() {
				cb(centrifuge.SubscribeReply{}, centrifuge.ErrorPermissionDenied)
				return
			}
			cb(centrifuge.SubscribeReply{}, nil)
		})
		client.OnPublish(func(e centrifuge.PublishEvent, cb centrifuge.PublishCallback) {
			cb(centrifuge.PublishReply{}, nil)
		})
	})
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{}))
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("{}")) })
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// The benchmark reads the bound address from the first line of stdout.
	os.Stdout.WriteString("listening " + ln.Addr().String() + "\n")
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	_ = node.Shutdown(ctx)
}
