// Command echo is the demo's and tests' backend: an HTTP server (HTTP/1.1 and h2c) that answers every request with
// its cluster and name, so traffic splits can be read off the responses. It binds loopback only.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	cluster := flag.String("cluster", "", "cluster name to report")
	name := flag.String("name", "", "backend name to report")
	flag.Parse()
	srv := &http.Server{Addr: *listen, Handler: Handler(*cluster, *name)}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
		<-c
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// Handler answers "cluster=<cluster> name=<name> path=<path>".
func Handler(cluster, name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "cluster=%s name=%s path=%s\n", cluster, name, r.URL.Path)
	})
}
