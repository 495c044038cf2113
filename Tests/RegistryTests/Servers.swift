import Foundation
import Basics
import OCI
import Registry
import Testing
import TestSupport

/// A port on 127.0.0.1 that nothing listens on right now (the kernel's choice for port 0).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
            guard bind(fd, p, length) == 0 else { return -1 }
            return getsockname(fd, p, &length)
        }
    }
    try #require(bound == 0)
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts connections on 127.0.0.1:port.
func isListening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// A server process a test started: stopped (SIGKILL, then reaped) by `stop()`, which the test
/// calls in a `defer`, and by deinit should a test leave it running.
final class ServerProcess {
    let process: Process
    let port: Int
    let log: String
    private var launched = false

    init(_ program: String, _ arguments: [String], port: Int, log: String) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        self.port = port
        self.log = log
        try process.run()
        launched = true
        // Up to 20 s for the server to listen; a server that exits is reported with its log.
        for _ in 0..<400 {
            if isListening(port) { return }
            if !process.isRunning { break }
            usleep(50_000)
        }
        stop()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw RegistryError(.unreachable, "\(program) did not listen on 127.0.0.1:\(port): \(text.suffix(2000))")
    }

    func stop() {
        guard launched else { return }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// Debian's docker-registry (distribution 2.8.2) on 127.0.0.1 with filesystem storage in a
/// temporary directory; with `tls`, a certificate for 127.0.0.1 signed by a CA made here
/// (its certificate in `certDirectory/ca.crt`); with `users`, htpasswd Basic authentication;
/// with `requireClientCertificates`, TLS only for clients showing a certificate the CA signed
/// (one is made in `clientPairDirectory` as client.cert and client.key).
final class TestRegistry {
    let directory = TemporaryDirectory()
    let server: ServerProcess
    let port: Int
    let tls: Bool
    var storage: String { directory("storage") }
    var certDirectory: String { directory("certs") }
    var clientPairDirectory: String { directory("client") }
    var host: String { "127.0.0.1:\(port)" }

    init(tls: Bool = false, users: [String: String] = [:], requireClientCertificates: Bool = false) throws {
        self.tls = tls
        var config = """
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: \(directory("storage"))
              delete:
                enabled: true
            """
        if tls {
            try TestRegistry.makeCertificates(in: directory.path)
        }
        if !users.isEmpty {
            let file = directory("htpasswd")
            _ = FileManager.default.createFile(atPath: file, contents: nil)
            for (user, password) in users {
                let line = try runOK("/usr/bin/htpasswd", ["-Bbn", user, password])
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
                handle.seekToEndOfFile()
                handle.write(line.trimmingCharacters(in: .whitespacesAndNewlines).data(using: .utf8)! + Data("\n".utf8))
                try handle.close()
            }
            config += """

                auth:
                  htpasswd:
                    realm: test-registry
                    path: \(file)
                """
        }
        var lastError: (any Error)?
        for _ in 0..<3 {
            let port = try freePort()
            var full = config + """

                http:
                  addr: 127.0.0.1:\(port)
                  secret: test-secret
                """
            if tls {
                full += """

                      tls:
                        certificate: \(directory("server.crt"))
                        key: \(directory("server.key"))
                    """
                if requireClientCertificates {
                    full += """

                            clientcas:
                              - \(directory("certs/ca.crt"))
                        """
                }
            }
            try full.write(toFile: directory("config.yml"), atomically: true, encoding: .utf8)
            do {
                server = try ServerProcess("/usr/bin/docker-registry", ["serve", directory("config.yml")], port: port, log: directory("registry.log"))
                self.port = port
                return
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    func stop() { server.stop() }

    /// A CA, and a server certificate for IP 127.0.0.1 it signs (P-256 keys: quick to make).
    static func makeCertificates(in dir: String) throws {
        let openssl = "/usr/bin/openssl"
        try FileManager.default.createDirectory(atPath: dir + "/certs", withIntermediateDirectories: true)
        try runOK(openssl, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                            "-keyout", dir + "/ca.key", "-out", dir + "/certs/ca.crt", "-days", "2", "-subj", "/CN=registry test CA"])
        try runOK(openssl, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                            "-keyout", dir + "/server.key", "-out", dir + "/server.csr", "-subj", "/CN=127.0.0.1"])
        try "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: dir + "/server.ext", atomically: true, encoding: .utf8)
        try runOK(openssl, ["x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/certs/ca.crt", "-CAkey", dir + "/ca.key",
                            "-CAcreateserial", "-out", dir + "/server.crt", "-days", "2", "-extfile", dir + "/server.ext"])
        try FileManager.default.createDirectory(atPath: dir + "/client", withIntermediateDirectories: true)
        try runOK(openssl, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                            "-keyout", dir + "/client/client.key", "-out", dir + "/client.csr", "-subj", "/CN=registry test client"])
        try "extendedKeyUsage=clientAuth\n".write(toFile: dir + "/client.ext", atomically: true, encoding: .utf8)
        try runOK(openssl, ["x509", "-req", "-in", dir + "/client.csr", "-CA", dir + "/certs/ca.crt", "-CAkey", dir + "/ca.key",
                            "-CAcreateserial", "-out", dir + "/client/client.cert", "-days", "2", "-extfile", dir + "/client.ext"])
    }

    /// `skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG`, the way images get into the registry
    /// independently of the client under test.
    func push(layout: String, tag: String, to repository: String, as destinationTag: String? = nil,
              format: String? = nil, credentials: String? = nil) throws {
        var args = ["copy", "--quiet", "--dest-tls-verify=false"]
        if let credentials { args += ["--dest-creds", credentials] }
        if let format { args += ["--format", format] }
        args += ["oci:\(layout):\(tag)", "docker://\(host)/\(repository):\(destinationTag ?? tag)"]
        try runOK("/usr/bin/skopeo", args)
    }

    /// Where the registry's filesystem driver keeps a blob's bytes.
    func blobDataPath(_ digest: Digest) -> String {
        "\(storage)/docker/registry/v2/blobs/\(digest.algorithm)/\(digest.encoded.prefix(2))/\(digest.encoded)/data"
    }

    func reference(_ repository: String, _ tag: String) throws -> RegistryReference {
        try RegistryReference(parsing: "docker://\(host)/\(repository):\(tag)")
    }
}

/// The project's fixture builder (Python's tarfile; independent of this project's tar code).
let makeImage: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("scripts/fixtures/make_image.py").path

/// A layout whose `tag` has one layer of about `size` bytes: random bytes (not a tar: the
/// registry and skopeo copy blobs as they are) gzipped, since skopeo would compress an
/// uncompressed layer on its way to a registry and so change its digest.
func writeRandomImage(layout: String, tag: String, size: Int) throws -> (manifest: Descriptor, layer: Descriptor) {
    var generator = SystemRandomNumberGenerator()
    var layer = [UInt8](repeating: 0, count: size)
    layer.withUnsafeMutableBytes { raw in
        for i in stride(from: 0, to: raw.count - 7, by: 8) { raw.storeBytes(of: generator.next() as UInt64, toByteOffset: i, as: UInt64.self) }
    }
    try FileManager.default.createDirectory(atPath: layout + "/blobs/sha256", withIntermediateDirectories: true)
    try Data(layer).write(to: URL(fileURLWithPath: layout + "/raw"))
    try runOK("/usr/bin/gzip", ["-1", "-n", layout + "/raw"])
    layer = try Array(Data(contentsOf: URL(fileURLWithPath: layout + "/raw.gz")))
    try FileManager.default.removeItem(atPath: layout + "/raw.gz")
    try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: layout + "/oci-layout"))
    func put(_ bytes: [UInt8], _ mediaType: String) throws -> Descriptor {
        let digest = try DigestHasher.digest(of: bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(layout)/blobs/sha256/\(digest.encoded)"))
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
    }
    let layerDescriptor = try put(layer, MediaType.layerTarGzip)
    let config = Array(#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["\#(layerDescriptor.digest)"]}}"#.utf8)
    let manifest = Manifest(config: try put(config, MediaType.imageConfig), layers: [layerDescriptor])
    let manifestDescriptor = try put(Array(JSON.object(manifest.json).text.utf8), MediaType.imageManifest)
    var index = ImageIndex()
    index.setManifests([manifestDescriptor.withRefName(tag)])
    try Data(JSON.object(index.json).text.utf8).write(to: URL(fileURLWithPath: layout + "/index.json"))
    return (manifestDescriptor, layerDescriptor)
}

/// Collects a blob stream in memory.
func collect(_ body: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) rethrows -> [UInt8] {
    var out: [UInt8] = []
    try body { out.append(contentsOf: $0) }
    return out
}

/// Expects `body` to throw a RegistryError of `kind` whose message contains every one of `texts`.
func expectError(_ kind: RegistryError.Kind, containing texts: [String], sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a \(kind) error, got success", sourceLocation: sourceLocation)
    } catch let error as RegistryError {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        for t in texts { #expect(error.message.contains(t), "\(error.message) lacks \(t)", sourceLocation: sourceLocation) }
        #expect(!error.message.contains("\n"), "one line: \(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a RegistryError, got \(error)", sourceLocation: sourceLocation)
    }
}
