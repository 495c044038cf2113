import Foundation
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// Files a command creates in a layout get the owner of the layout directory, as umoci gives
/// them: root editing a layout another user owns leaves it theirs (issue 12).
@Suite struct OwnershipTests {
    /// Every path under `root` whose owner is not uid:gid.
    static func foreignOwners(_ root: String, _ uid: uid_t, _ gid: gid_t) -> [String] {
        var out: [String] = []
        for rel in (FileManager.default.subpaths(atPath: root) ?? []) + [""] {
            var st = stat()
            guard lstat(root + "/" + rel, &st) == 0 else { continue }
            if st.st_uid != uid || st.st_gid != gid { out.append("\(rel): \(st.st_uid):\(st.st_gid)") }
        }
        return out.sorted()
    }

    @Test(.enabled(if: geteuid() == 0, "only root can give files away"))
    func newFilesTakeTheLayoutOwner() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        // init into an empty directory someone else owns.
        try FileManager.default.createDirectory(atPath: L, withIntermediateDirectories: false)
        #expect(chown(L, 1234, 5678) == 0)
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        _ = FileManager.default.createFile(atPath: dir("f"), contents: Data("f\n".utf8))
        ok(try umoci("insert", "--image", L + ":t", dir("f"), "/f"))
        ok(try umoci("insert", "--compress", "zstd", "--image", L + ":t", dir("f"), "/g"))
        ok(try run("/bin/tar", ["-cf", dir("layer.tar"), "-C", dir.path, "f"]))
        ok(try umoci("raw", "add-layer", "--image", L + ":t", dir("layer.tar")))
        ok(try umoci("config", "--image", L + ":t", "--author", "a"))
        ok(try umoci("tag", "--image", L + ":t", "u"))
        ok(try umoci("gc", "--layout", L))
        #expect(Self.foreignOwners(L, 1234, 5678) == [])

        // A layout given away after init: what commands write from then on (blobs and
        // index.json) is the new owner's; what was there stays as it was.
        let M = dir("M")
        ok(try umoci("init", "--layout", M))
        #expect(chown(M, 42, 43) == 0)
        ok(try umoci("new", "--image", M + ":t"))
        #expect(Self.foreignOwners(M, 42, 43) == ["blobs/sha256: 0:0", "blobs: 0:0", "oci-layout: 0:0"])
    }
}
