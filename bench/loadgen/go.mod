module github.com/palaver-chat/palaver/bench/loadgen

go 1.24.0

require (
	connectrpc.com/connect v1.19.1
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/palaver-chat/palaver/gen/go v0.0.0
	golang.org/x/net v0.50.0
	google.golang.org/protobuf v1.36.12
)

require (
	buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go v1.36.12-20260709200747-435963d16310.1 // indirect
	golang.org/x/text v0.34.0 // indirect
)

// The generated client is used from this checkout.
replace github.com/palaver-chat/palaver/gen/go => ../../gen/go
