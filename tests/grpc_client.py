#!/usr/bin/env python3
"""An independent gRPC client (grpcio + server reflection), for the API tests.

usage: grpc_client.py status ADDR TOKEN      list services, call Cluster/ClusterStatus
       grpc_client.py no-token ADDR          calls without a token must be refused
       grpc_client.py bad-spawn ADDR TOKEN   Spawn with an invalid definition
       grpc_client.py malformed ADDR TOKEN   bytes that are no protobuf, with the token
       grpc_client.py exec-resize ADDR TOKEN ID
                                             Exec on a terminal: `stty size`, a resize,
                                             `stty size` again; prints what came back
Nothing here is generated from haconiwa's proto files: the schema comes from the
server's reflection service.
"""
import sys
import threading

import grpc
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def call(channel, pool, service, method, fields, metadata):
    svc = pool.FindServiceByName(service)
    m = svc.FindMethodByName(method)
    req_cls = GetMessageClass(m.input_type)
    resp_cls = GetMessageClass(m.output_type)
    stub = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=req_cls.SerializeToString,
        response_deserializer=resp_cls.FromString,
    )
    return stub(req_cls(**fields), metadata=metadata, timeout=10)


def main():
    mode, addr = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else ""
    channel = grpc.insecure_channel(addr)
    md = [("authorization", f"Bearer {token}")] if token else []
    if mode == "no-token":
        for service, method in [("haconiwa.v1.Cluster", "ClusterStatus"), ("haconiwa.v1.Raft", "Vote")]:
            stub = channel.unary_unary(f"/{service}/{method}", request_serializer=lambda x: x, response_deserializer=lambda x: x)
            try:
                stub(b"", timeout=10)
                print(f"{service}/{method}: ACCEPTED")
                return 1
            except grpc.RpcError as e:
                print(f"{service}/{method}: {e.code().name}")
        return 0
    if mode == "malformed":
        for service, method in [("haconiwa.v1.Cluster", "ClusterStatus"), ("haconiwa.v1.Cluster", "Spawn"), ("haconiwa.v1.Raft", "Vote")]:
            stub = channel.unary_unary(f"/{service}/{method}", request_serializer=lambda x: x, response_deserializer=lambda x: x)
            try:
                stub(b"\xff\xff\xff\xff", metadata=md, timeout=10)
                print(f"{service}/{method}: ACCEPTED")
            except grpc.RpcError as e:
                print(f"{service}/{method}: {e.code().name} {e.details()}")
        return 0
    # Reflection with the token (the reflection service is behind the same check).
    class Auth(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def _md(self, details):
            return details._replace(metadata=list(details.metadata or []) + md)

        def intercept_unary_unary(self, cont, details, request):
            return cont(self._md(details), request)

        def intercept_stream_stream(self, cont, details, it):
            return cont(self._md(details), it)

    channel = grpc.intercept_channel(channel, Auth())
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    print("services:", " ".join(sorted(services)))
    pool = descriptor_pool.DescriptorPool(db)
    if mode == "status":
        r = call(channel, pool, "haconiwa.v1.Cluster", "ClusterStatus", {}, [])
        print(f"leader={r.leader} term={r.term} members={len(r.members)}")
        print(json_format.MessageToJson(r))
        return 0
    if mode == "bad-spawn":
        try:
            call(channel, pool, "haconiwa.v1.Cluster", "Spawn",
                 {"haco": "haconiwa.define(|c| {\n    c.nmae = 1;\n});", "file": "broken.haco"}, [])
            print("ACCEPTED")
            return 1
        except grpc.RpcError as e:
            print(e.code().name, e.details())
            return 0
    if mode == "exec-resize":
        svc = pool.FindServiceByName("haconiwa.v1.Cluster")
        m = svc.FindMethodByName("Exec")
        req_cls, resp_cls = GetMessageClass(m.input_type), GetMessageClass(m.output_type)
        first_size = threading.Event()

        def inputs():
            yield req_cls(start={"id": sys.argv[4], "tty": True, "rows": 24, "cols": 80,
                                 "command": ["/bin/sh", "-c", "stty size; read x; stty size; exit 5"]})
            # The resize only once the first size has been printed.
            first_size.wait(20)
            yield req_cls(resize={"rows": 50, "cols": 132})
            yield req_cls(stdin=b"go\n")

        stub = channel.stream_stream("/haconiwa.v1.Cluster/Exec",
                                     request_serializer=req_cls.SerializeToString,
                                     response_deserializer=resp_cls.FromString)
        out = b""
        for r in stub(inputs(), timeout=30):
            kind = r.WhichOneof("output")
            if kind == "stdout":
                out += r.stdout
                if b"24 80" in out:
                    first_size.set()
            elif kind == "exit_code":
                print("output:", " ".join(out.decode(errors="replace").split()))
                print("exit:", r.exit_code)
                return 0
        print("no exit status; output:", out)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
