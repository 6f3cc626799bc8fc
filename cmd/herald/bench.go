package main

import "github.com/heraldhq/herald/bench"

func runBench(args []string) error { return bench.Main(args) }
