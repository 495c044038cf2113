import Foundation
import Basics
import OCI
import Registry
import Testing
import TestSupport

/// Faults against a real registry: each gives one clear line, and no file is left half-made.
@Suite(.serialized) struct FaultTests {
    static let plain = RegistryOptions(tlsVerify: false)

    @Test func aBlobWhoseBytesDoNotMatchItsDigest() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        let (_, layer) = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 100_000)
        try registry.push(layout: tmp("layout"), tag: "t", to: "bad/img")
        // One byte changed in the registry's own storage, the size kept.
        let data = registry.blobDataPath(layer.digest)
        let fd = open(data, O_RDWR)
        try #require(fd >= 0, "\(data)")
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, 5000) == 1)
        byte ^= 0xFF
        #expect(pwrite(fd, &byte, 1, 5000) == 1)
        close(fd)

        let reference = try registry.reference("bad/img", "t")
        let client = try RegistryClient(for: reference, options: Self.plain)
        let image = try client.resolve(reference)
        expectError(.digestMismatch, containing: ["blob \(layer.digest)", "bad/img", "digest mismatch"]) {
            _ = try collect { sink in try client.fetchBlob(image.parsed.layers[0], from: "bad/img", to: sink) }
        }
        try FileManager.default.createDirectory(atPath: tmp("store"), withIntermediateDirectories: true)
        expectError(.digestMismatch, containing: ["blob \(layer.digest)"]) {
            try client.fetchBlob(image.parsed.layers[0], from: "bad/img", into: tmp("store/blob"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp("store")) == [], "nothing half-made")
        // A descriptor whose size is wrong is caught too, before the digest.
        let shorter = Descriptor(mediaType: layer.mediaType, digest: layer.digest, size: layer.size - 1)
        expectError(.digestMismatch, containing: ["blob \(layer.digest)", "more than the \(layer.size - 1) bytes"]) {
            _ = try collect { sink in try client.fetchBlob(shorter, from: "bad/img", to: sink) }
        }
    }

    @Test func theRegistryStoppedMidBlob() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        let (_, layer) = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 48 << 20)
        try registry.push(layout: tmp("layout"), tag: "t", to: "big/img")
        let reference = try registry.reference("big/img", "t")
        let client = try RegistryClient(for: reference, options: Self.plain)
        let image = try client.resolve(reference)
        try FileManager.default.createDirectory(atPath: tmp("store"), withIntermediateDirectories: true)
        var killed = false
        var received = 0
        expectError(.unreachable, containing: ["blob \(layer.digest)", "connection cut after", "of \(layer.size) bytes", registry.host]) {
            try client.fetchBlob(image.parsed.layers[0], from: "big/img") { chunk in
                received += chunk.count
                if !killed {
                    killed = true
                    registry.stop()
                }
            }
        }
        #expect(killed && received < Int(layer.size))
        // And a registry that is down from the start: the host and port named.
        expectError(.unreachable, containing: ["cannot reach \(registry.host)"]) {
            _ = try RegistryClient(for: reference, options: Self.plain).resolve(reference)
        }
    }

    @Test(arguments: [false, true]) func aCutConnectionIsResumed(proxyIgnoresRange: Bool) throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        let (_, layer) = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 6 << 20)
        try registry.push(layout: tmp("layout"), tag: "t", to: "cut/img")
        // A proxy that cuts the first blob response after 1 MiB, then passes everything (and,
        // as a registry that ignores Range would, drops the Range header).
        let proxy = try CuttingProxy(backend: registry.port, cutAfter: 1 << 20, ignoreRange: proxyIgnoresRange, directory: tmp.path)
        defer { proxy.stop() }
        let reference = try RegistryReference(parsing: "docker://127.0.0.1:\(proxy.port)/cut/img:t")
        let client = try RegistryClient(for: reference, options: Self.plain)
        let image = try client.resolve(reference)
        let bytes = try collect { sink in try client.fetchBlob(image.parsed.layers[0], from: "cut/img", to: sink) }
        #expect(bytes.count == Int(layer.size))
        #expect(try DigestHasher.digest(of: bytes) == layer.digest)
        let ranges = try String(contentsOfFile: proxy.log, encoding: .utf8)
        #expect(ranges == "range -\nrange bytes=\(1 << 20)-\n", "one cut, one resumption asking for the rest")
    }
}

/// A proxy (python3) that forwards to a registry but closes the connection of the first blob
/// GET after `cutAfter` bytes, logging each blob request's Range header.
final class CuttingProxy {
    let server: ServerProcess
    let port: Int
    let log: String

    init(backend: Int, cutAfter: Int, ignoreRange: Bool, directory: String) throws {
        let script = directory + "/cut-proxy.py"
        log = directory + "/cut-proxy.requests"
        try CuttingProxy.source.write(toFile: script, atomically: true, encoding: .utf8)
        port = try freePort()
        server = try ServerProcess("/usr/bin/python3", [script, String(port), String(backend), String(cutAfter), log, ignoreRange ? "ignore-range" : "-"],
                                   port: port, log: directory + "/cut-proxy.log")
    }

    func stop() { server.stop() }

    static let source = #"""
        import http.client, http.server, sys, threading
        port, backend, cut_after, log = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        ignore_range = sys.argv[5] == "ignore-range"
        lock = threading.Lock()
        state = {"cut": False}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def do_GET(self):
                self.forward("GET")
            def do_HEAD(self):
                self.forward("HEAD")
            def forward(self, method):
                blob = "/blobs/" in self.path
                cut = False
                if blob and method == "GET":
                    with lock:
                        with open(log, "a") as f:
                            f.write("range %s\n" % self.headers.get("Range", "-"))
                        if not state["cut"]:
                            state["cut"] = cut = True
                conn = http.client.HTTPConnection("127.0.0.1", backend)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() != "connection" and not (ignore_range and k.lower() == "range")}
                conn.request(method, self.path, headers=headers)
                r = conn.getresponse()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                        self.send_header(k, v)
                self.end_headers()
                sent = 0
                while method != "HEAD":
                    chunk = r.read(65536)
                    if not chunk:
                        break
                    if cut and sent + len(chunk) > cut_after:
                        self.wfile.write(chunk[:cut_after - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
                conn.close()

        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#
}
