import Foundation
import LayerStore
import Registry
import Testing

/// The umoci of this package, beside the test bundle in the build directory.
let umociBinary: String = {
    var dir = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    repeat { dir = dir.deletingLastPathComponent() } while dir.path != "/" && !FileManager.default.isExecutableFile(atPath: dir.path + "/umoci")
    return dir.path + "/umoci"
}()

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

    func umoci(_ arguments: [String]) throws -> Output { try run(umociBinary, arguments, environment: environment) }

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
        defer {
            _ = try? run(umociBinary, ["umount", bundle], environment: environment)
            if (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8))?.contains(bundle + "/rootfs") == true {
                umount2(bundle + "/rootfs", Int32(MNT_DETACH))
            }
        }
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
