import Foundation
import Basics
import OCI
import Registry
import Testing
import TestSupport

/// Files, modes, owners, sizes, link targets, xattrs and contents of a tree, as one text (Python,
/// independent of this project's code), for comparing two unpacks.
func treeListing(_ root: String) throws -> String {
    let script = #"""
        import hashlib, os, sys
        root = sys.argv[1]
        for d, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(dirs + files):
                p = os.path.join(d, name); st = os.lstat(p); rel = os.path.relpath(p, root)
                xattrs = sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p, follow_symlinks=False))
                extra = os.readlink(p) if os.path.islink(p) else hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) and not os.path.islink(p) else ""
                print(rel, oct(st.st_mode), st.st_uid, st.st_gid, st.st_size if not os.path.isdir(p) else 0, int(st.st_mtime), xattrs, extra)
        """#
    return try runOK("/usr/bin/python3", ["-c", script, root])
}

/// `--image docker://...` on the commands: the same results as from the layout skopeo pushed.
@Suite(.serialized) struct CommandTests {
    let registry: TestRegistry
    let tmp = TemporaryDirectory()
    var image: String { "docker://\(registry.host)/cmd/basic:v1" }
    var environment: [String: String] { ["UMOCI_CACHE_DIR": tmp("cache"), "HOME": tmp.path] }

    init() throws {
        registry = try TestRegistry()
        try runOK("/usr/bin/python3", [makeImage, tmp("layout"), "basic", "v1"])
        try registry.push(layout: tmp("layout"), tag: "v1-gzip", to: "cmd/basic", as: "v1")
    }

    func umoci(_ arguments: [String]) throws -> Output { try run(ourUmoci, arguments, environment: environment) }

    @Test func statRawUnpackAndRuntimeConfigMatchTheLayout() throws {
        defer { registry.stop() }
        let fromRegistry = try umoci(["stat", "--tls-verify=false", "--image", image])
        let fromLayout = try umoci(["stat", "--image", "oci:\(tmp("layout")):v1-gzip"])
        // The same but for the layout's tag annotation on the manifest descriptor, which a
        // registry's manifest descriptor does not carry.
        let layoutText = fromLayout.stdout.replacingOccurrences(of: "\tAnnotations:\n\t\torg.opencontainers.image.ref.name: v1-gzip\n", with: "")
        #expect(layoutText != fromLayout.stdout)
        #expect(fromRegistry.status == 0 && fromRegistry.stdout == layoutText, "\(fromRegistry)")
        // stat fetched no layer.
        let layers = try FileManager.default.contentsOfDirectory(atPath: tmp("cache/layout/blobs/sha256"))
        #expect(layers.count == 2, "manifest and config only: \(layers)")

        #expect(try umoci(["raw", "unpack", "--tls-verify=false", "--image", image, tmp("a")]).status == 0)
        #expect(try umoci(["raw", "unpack", "--image", tmp("layout") + ":v1-gzip", tmp("b")]).status == 0)
        #expect(try treeListing(tmp("a")) == treeListing(tmp("b")))

        #expect(try umoci(["raw", "runtime-config", "--tls-verify=false", "--image", image, tmp("a.json")]).status == 0)
        #expect(try umoci(["raw", "runtime-config", "--image", tmp("layout") + ":v1-gzip", tmp("b.json")]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: tmp("a.json"))) == Data(contentsOf: URL(fileURLWithPath: tmp("b.json"))))
    }

    @Test func unpackRecordsItsSourceAndMountsAgainWithoutTheRegistry() throws {
        defer { registry.stop() }
        let bundle = tmp("bundle")
        // Unmounted when the test ends, whatever it did.
        let cleanup = MountedBundle(bundle)
        defer { withExtendedLifetime(cleanup) {} }
        let unpack = try umoci(["unpack", "--tls-verify=false", "--image", image, bundle])
        try #require(unpack.status == 0, "\(unpack)")
        let metadata = try JSON.parse(Array(Data(contentsOf: URL(fileURLWithPath: bundle + "/umoci.json")))).object
        let source = metadata?["image_source"]?.object
        #expect(source?["reference"]?.string == image)
        let resolved = try #require(source?["resolved"]?.string)
        #expect(resolved.hasPrefix("docker://\(registry.host)/cmd/basic@sha256:"))
        let mounted = metadata?["unpack_mode"]?.string == "mount"
        if mounted {
            #expect(try umoci(["umount", bundle]).status == 0)
        }
        // The registry goes away; the bundle's base is in the index cache's blob layout.
        registry.stop()
        if mounted {
            let again = try umoci(["mount", bundle])
            #expect(again.status == 0, "\(again)")
        }
        let hostname = try String(contentsOfFile: bundle + "/rootfs/etc/hostname", encoding: .utf8)
        #expect(hostname == "test\n")
        // And so does a second unpack of the same image: nothing is fetched, but resolving the
        // tag needs the registry: a clear error naming it, and no bundle left behind.
        let down = try umoci(["unpack", "--tls-verify=false", "--image", image, tmp("bundle2")])
        #expect(down.status == 1 && down.stderr.contains("cannot reach \(registry.host)"), "\(down)")
        #expect(down.stderr.split(separator: "\n").count == 1, "\(down)")
        #expect(!FileManager.default.fileExists(atPath: tmp("bundle2/umoci.json")))
    }

    /// One pass per layer: unpack from a registry downloads each layer into the cache's blob
    /// layout and indexes it from the same bytes, so no process of the unpack (the command, the
    /// mount server it starts) opens a downloaded layer blob to read it again; the index cache is
    /// warm when the download ends, and the mount serves files from it. `-b execve`: strace lets
    /// go of the mount server (it outlives the command; strace would wait for it).
    @Test func unpackIndexesEachLayerWhileItDownloads() throws {
        defer { registry.stop() }
        let bundle = tmp("bundle")
        // Unmounted when the test ends, whatever it did.
        let cleanup = MountedBundle(bundle)
        defer { withExtendedLifetime(cleanup) {} }
        let reference = try registry.reference("cmd/basic", "v1")
        let layers = try RegistryClient(for: reference, options: RegistryOptions(tlsVerify: false)).resolve(reference).parsed.layers
        try #require(layers.count == 3)
        let trace = tmp("trace")
        let unpack = try run("/usr/bin/strace", ["-f", "-b", "execve", "-qq", "-e", "trace=open,openat,read,pread64,close", "-o", trace,
                                                 ourUmoci, "unpack", "--tls-verify=false", "--image", image, bundle],
                             environment: environment)
        try #require(unpack.status == 0, "\(unpack)")
        let opens = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        // The command opens the blobs to hand them to the mount server; it must not read them.
        // Which descriptor is a layer blob, from its openat to its close (one process: the
        // server is not traced).
        var open: [String: Digest] = [:]
        var reads: [Digest: Int] = [:]
        for line in opens {
            let words = line.split(separator: " ", maxSplits: 1)
            guard words.count == 2 else { continue }
            let call = words[1]
            if call.hasPrefix("openat("), let layer = layers.first(where: { call.contains("/blobs/sha256/\($0.digest.encoded)\"") }),
               let fd = call.split(separator: "=").last?.trimmingCharacters(in: .whitespaces) {
                open[fd] = layer.digest
            } else if call.hasPrefix("close(") {
                open[String(call.dropFirst(6).prefix { $0 != ")" })] = nil
            } else if call.hasPrefix("read(") || call.hasPrefix("pread64(") {
                let fd = String(call.drop { $0 != "(" }.dropFirst().prefix { $0 != "," })
                if let layer = open[fd] { reads[layer, default: 0] += 1 }
            }
        }
        for layer in layers {
            #expect(reads[layer.digest] == nil, "layer \(layer.digest) was read again after its download")
            #expect(FileManager.default.fileExists(atPath: tmp("cache/index/sha256/") + layer.digest.encoded))
        }
        #expect(try String(contentsOfFile: bundle + "/rootfs/etc/hostname", encoding: .utf8) == "test\n")
    }

    @Test func repackPushesOnlyTheNewLayerAndWritesCompleteLayouts() throws {
        defer { registry.stop() }
        let bundle = tmp("bundle")
        // Unmounted when the test ends, whatever it did.
        let cleanup = MountedBundle(bundle)
        defer { withExtendedLifetime(cleanup) {} }
        let unpack = try umoci(["unpack", "--tls-verify=false", "--image", image, bundle])
        try #require(unpack.status == 0, "\(unpack)")
        // A new file at the top of the rootfs (no path component to follow).
        let fd = open(bundle + "/rootfs/added-by-test", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)
        try #require(fd >= 0)
        #expect(write(fd, "hello\n", 6) == 6)
        close(fd)

        // To a new tag of the same repository: the base layers are there already.
        let push = try umoci(["--log", "info", "repack", "--tls-verify=false", "--image", "docker://\(registry.host)/cmd/basic:v2", bundle])
        try #require(push.status == 0, "\(push)")
        #expect(push.stderr.components(separatedBy: "already in \(registry.host)/cmd/basic").count - 1 == 3, "three base layers: \(push)")
        #expect(push.stderr.components(separatedBy: "uploaded to").count - 1 == 2, "the new layer and the config: \(push)")
        // To another repository: the registry links the base layers across, and the new layer
        // too (the same bytes again, which the first push put into the source repository).
        let other = try umoci(["--log", "info", "repack", "--tls-verify=false", "--image", "docker://\(registry.host)/cmd/other:v2", bundle])
        try #require(other.status == 0, "\(other)")
        #expect(other.stderr.components(separatedBy: "mounted into \(registry.host)/cmd/other").count - 1 == 4, "\(other)")
        // No staging layout left in the cache.
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp("cache")).allSatisfy { !$0.hasPrefix("push-") })

        // skopeo and Debian's umoci read the pushed image: the new file on top of the base.
        for repository in ["cmd/basic", "cmd/other"] {
            let copy = tmp("copy-" + repository.replacingOccurrences(of: "/", with: "-"))
            try runOK("/usr/bin/skopeo", ["copy", "--quiet", "--src-tls-verify=false", "docker://\(registry.host)/\(repository):v2", "oci:\(copy):v2"])
            try runOK("/usr/bin/umoci", ["raw", "unpack", "--image", copy + ":v2", copy + "-rootfs"])
            #expect(try String(contentsOfFile: copy + "-rootfs/added-by-test", encoding: .utf8) == "hello\n")
            #expect(try String(contentsOfFile: copy + "-rootfs/etc/hostname", encoding: .utf8) == "test\n")
        }

        // Into a local layout: a complete image (the base's blobs come from the cache).
        try runOK(ourUmoci, ["init", "--layout", tmp("local")])
        let local = try umoci(["repack", "--image", tmp("local") + ":v2", bundle])
        try #require(local.status == 0, "\(local)")
        try runOK("/usr/bin/umoci", ["raw", "unpack", "--image", tmp("local") + ":v2", tmp("local-rootfs")])
        #expect(try String(contentsOfFile: tmp("local-rootfs/added-by-test"), encoding: .utf8) == "hello\n")

        // A digest is no place to push to; --refresh-bundle is not there yet.
        let byDigest = try umoci(["repack", "--tls-verify=false", "--image", "docker://\(registry.host)/cmd/basic@sha256:" + String(repeating: "0", count: 64), bundle])
        #expect(byDigest.status == 1 && byDigest.stderr.contains("repack pushes to a tag"), "\(byDigest)")
        let refresh = try umoci(["repack", "--refresh-bundle", "--tls-verify=false", "--image", "docker://\(registry.host)/cmd/basic:v3", bundle])
        #expect(refresh.status == 1 && refresh.stderr.contains("not supported yet"), "\(refresh)")
    }

    @Test func roundTripThroughTLSAndBasicAuth() throws {
        defer { registry.stop() }
        let secure = try TestRegistry(tls: true, users: ["dora": "pw"])
        defer { secure.stop() }
        try secure.push(layout: tmp("layout"), tag: "v1-gzip", to: "sec/basic", as: "v1", credentials: "dora:pw")
        let flags = ["--cert-dir", secure.certDirectory, "--creds", "dora:pw"]
        let source = "docker://\(secure.host)/sec/basic:v1"
        try #require(try umoci(["raw", "unpack"] + flags + ["--image", source, tmp("rootfs")]).status == 0)
        #expect(try String(contentsOfFile: tmp("rootfs/etc/hostname"), encoding: .utf8) == "test\n")
        // An extracted bundle, repacked back with a new file, read back by skopeo.
        let bundle = tmp("bundle")
        let unpack = try run(ourUmoci, ["unpack", "--extract"] + flags + ["--image", source, bundle], environment: environment)
        try #require(unpack.status == 0, "\(unpack)")
        let fd = open(bundle + "/rootfs/added-by-test", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644)
        try #require(fd >= 0)
        close(fd)
        let push = try umoci(["repack"] + flags + ["--image", "docker://\(secure.host)/sec/basic:v2", bundle])
        try #require(push.status == 0, "\(push)")
        let wrong = try umoci(["repack", "--cert-dir", secure.certDirectory, "--creds", "dora:bad", "--image", "docker://\(secure.host)/sec/basic:v3", bundle])
        #expect(wrong.status == 1 && wrong.stderr.contains("wrong user name or password"), "\(wrong)")
        let layers = try JSON.parse(Array(try runOK("/usr/bin/skopeo", ["inspect", "--cert-dir", secure.certDirectory, "--creds", "dora:pw",
                                                                        "docker://\(secure.host)/sec/basic:v2"]).utf8)).object?["Layers"]?.array
        #expect(layers?.count == 4)
    }

    @Test func badReferencesAndFlagsAreOneLineErrors() throws {
        defer { registry.stop() }
        for (args, text) in [
            (["unpack", "--tls-verify=false", "--image", "docker://\(registry.host)/cmd/basic:nope", tmp("x")], "MANIFEST_UNKNOWN"),
            (["unpack", "--image", image, tmp("x")], "--tls-verify=false"),
            (["stat", "--image", "docker://\(registry.host)/Bad/name"], "repository component \"Bad\""),
            (["stat", "--image", "docker://\(registry.host)/cmd/basic:v1", "--creds", "nopassword"], "no password given"),
            (["config", "--image", image, "--author", "x"], "this command works on a local layout"),
        ] {
            let o = try umoci(args)
            #expect(o.status == 1, "\(args): \(o)")
            #expect(o.stderr.contains(text), "\(args): \(o)")
            #expect(o.stderr.split(separator: "\n").count == 1, "\(args): \(o)")
        }
        #expect(!FileManager.default.fileExists(atPath: tmp("x")))
    }
}
