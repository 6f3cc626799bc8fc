package herald

// SetTestHookSessionClose sets a function that each session's OnClose
// calls first, with the session's node id; nil removes it. Tests use it to
// hold a close that the transport has begun but not yet reported.
func SetTestHookSessionClose(f func(node string)) {
	if f == nil {
		testHookSessionClose.Store(nil)
		return
	}
	testHookSessionClose.Store(&f)
}
