package sidecar

import (
	"net"
	"testing"
)

func TestTCPCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	c := newCheck(t, "tcp: {address: "+ln.Addr().String()+"}")
	expect(t, c, true, "connected")
	ln.Close()
	expect(t, c, false, "tcp dial "+ln.Addr().String()+": ")
}
