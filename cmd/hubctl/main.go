// Command hubctl administers a fedgate hub: apply, delete and list Gateway API objects and clusters.
// See cmd/hubctl/app for the commands.
package main

import (
	"os"

	"github.com/fedgate/fedgate/cmd/hubctl/app"
)

func main() {
	os.Exit(app.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
