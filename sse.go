package herald

// sseState is a Server-Sent Events session's positions (sse.go).
type sseState struct{}
