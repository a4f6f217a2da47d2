"""A CRI client for tests/cri.rs: makes a kubelet's gRPC calls over containerd's socket.

Usage: /usr/bin/python3 client.py SOCKET. Compiles api.proto (next to this file) into a
temporary directory, connects once, then reads one request per line on stdin,
{"call": "RunPodSandbox", "request": {...}} (fields by their proto names), and answers each on
stdout with {"response": {...}} or {"error": "CODE: details"}. Every call is bounded (60 s).
Needs Debian's python3-grpcio and python3-grpc-tools.
"""
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICES = {
    "Version": "RuntimeService",
    "RunPodSandbox": "RuntimeService",
    "StopPodSandbox": "RuntimeService",
    "RemovePodSandbox": "RuntimeService",
    "PodSandboxStatus": "RuntimeService",
    "CreateContainer": "RuntimeService",
    "StartContainer": "RuntimeService",
    "StopContainer": "RuntimeService",
    "ImageStatus": "ImageService",
}


def compile_api(out):
    rc = protoc.main(["protoc", "-I", HERE, "--python_out=" + out, "--grpc_python_out=" + out,
                      os.path.join(HERE, "api.proto")])
    if rc != 0:
        sys.exit("protoc failed on api.proto")
    sys.path.insert(0, out)


def main():
    socket = sys.argv[1]
    with tempfile.TemporaryDirectory() as out:
        compile_api(out)
        import api_pb2
        import api_pb2_grpc
        channel = grpc.insecure_channel("unix://" + socket)
        stubs = {
            "RuntimeService": api_pb2_grpc.RuntimeServiceStub(channel),
            "ImageService": api_pb2_grpc.ImageServiceStub(channel),
        }
        for line in sys.stdin:
            req = json.loads(line)
            call = req["call"]
            message = getattr(api_pb2, call + "Request")()
            json_format.ParseDict(req.get("request", {}), message)
            try:
                reply = getattr(stubs[SERVICES[call]], call)(message, timeout=60)
                answer = {"response": json_format.MessageToDict(reply, preserving_proto_field_name=True)}
            except grpc.RpcError as e:
                answer = {"error": "%s: %s" % (e.code().name, e.details())}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
