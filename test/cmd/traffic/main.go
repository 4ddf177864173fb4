// Command traffic sends N requests to a gateway and prints the observed split per backend and per cluster, as read
// from the echo backends' answers ("cluster=... name=..."). Used by `make demo`. Loopback targets only.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	target := flag.String("url", "http://127.0.0.1:8080/", "gateway URL (loopback only)")
	host := flag.String("host", "", "Host header to send")
	n := flag.Int("n", 1000, "number of requests")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil {
		fail(err)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		fail(fmt.Errorf("refusing non-loopback target %q", u.Hostname()))
	}
	client := &http.Client{Timeout: 5 * time.Second}
	byBackend, byCluster, codes := map[string]int{}, map[string]int{}, map[int]int{}
	for i := 0; i < *n; i++ {
		req, _ := http.NewRequest(http.MethodGet, *target, nil)
		if *host != "" {
			req.Host = *host
		}
		resp, err := client.Do(req)
		if err != nil {
			codes[0]++
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode != http.StatusOK {
			continue
		}
		f := fields(string(body))
		byBackend[f["cluster"]+"/"+f["name"]]++
		byCluster[f["cluster"]]++
	}
	fmt.Printf("%d requests to %s (Host %q): status codes %v\n", *n, *target, *host, codes)
	print("per backend (cluster/name)", byBackend, *n)
	print("per cluster", byCluster, *n)
}

func fields(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func print(title string, m map[string]int, n int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Printf("  %s:\n", title)
	for _, k := range keys {
		bar := strings.Repeat("#", m[k]*50/n)
		fmt.Printf("    %-16s %5d  %5.1f%%  %s\n", k, m[k], 100*float64(m[k])/float64(n), bar)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "traffic:", err)
	os.Exit(1)
}
