module github.com/palaver-chat/palaver/gen/go

go 1.24.0

require (
	buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go v1.36.12-20260709200747-435963d16310.1
	connectrpc.com/connect v1.19.1
	google.golang.org/protobuf v1.36.12
)
