// Package labtest holds the end-to-end tests of the local lab. They build the
// lumen, lumen-agent and lumen-cni binaries once and drive labs through the
// lumen command line, the way a user does: up, status, probe, exec, agent
// restarts and down. They need root (they create network namespaces).
package labtest
