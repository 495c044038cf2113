#if canImport(Glibc)
import Glibc
#endif
import CLinux
import FuseFS
import LayerView
import Testing

@Suite("FuseFS lower view", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct LowerTests {
    /// Every node of the view appears through the mount with the view's type, metadata and
    /// content; directory listings equal the view's children.
    @Test(arguments: ["basic", "whiteouts"])
    func everyNodeMatchesTheView(tag: String) throws {
        let m = try Mounted(tag: tag)
        defer { m.close() }
        let view = m.view
        var stack: [Int32] = [MergedView.root]
        var files = 0
        while let node = stack.popLast() {
            let rel = view.path(of: node).description
            let path = rel.isEmpty ? m.mnt : m.path(rel)
            let inode = view.inode(of: node)
            let st = try #require(lstatOrNil(path), "lstat \(rel)")
            if node != MergedView.root {
                let mode = inode.type == .symlink ? 0o777 : mode_t(inode.mode & 0o7777)
                #expect(st.st_mode & 0o7777 == mode, "mode of \(rel)")
                #expect(Int64(st.st_uid) == inode.uid && Int64(st.st_gid) == inode.gid, "owner of \(rel)")
            }
            #expect(Int64(st.st_mtim.tv_sec) == inode.mtime && Int32(st.st_mtim.tv_nsec) == inode.mtimeNanoseconds, "mtime of \(rel)")
            #expect(st.st_ino == UInt(view.inodeNumber(of: node)) + 1, "st_ino of \(rel)")
            switch inode.type {
            case .directory:
                #expect(st.st_mode & S_IFMT == S_IFDIR)
                let names = view.children(of: node).map { view.name(of: $0).description }.sorted()
                #expect(listNames(path) == names, "listing of \(rel)")
                stack.append(contentsOf: view.children(of: node))
            case .regular, .hardlink:
                #expect(st.st_mode & S_IFMT == S_IFREG)
                #expect(Int64(st.st_size) == inode.size)
                #expect(st.st_nlink == UInt(inode.linkCount), "nlink of \(rel)")
                var expected = [UInt8](repeating: 0, count: Int(inode.size))
                let n = try expected.withUnsafeMutableBytes { try view.read(inode: view.inodeNumber(of: node), at: 0, into: $0) }
                #expect(n == Int(inode.size))
                #expect(readFile(path) == expected, "content of \(rel)")
                files += 1
            case .symlink:
                var buf = [CChar](repeating: 0, count: 4096)
                let n = readlink(path, &buf, buf.count)
                #expect(n >= 0 && String(decoding: buf[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self) == inode.linkName.description,
                        "target of \(rel)")
            case .characterDevice, .blockDevice:
                #expect(umoci_major(dev_t(st.st_rdev)) == inode.devMajor && umoci_minor(dev_t(st.st_rdev)) == inode.devMinor)
            case .fifo:
                #expect(st.st_mode & S_IFMT == S_IFIFO)
            }
            for x in inode.xattrs where x.name.hasPrefix("user.") {
                #expect(getxattrString(path, x.name.description) == String(decoding: x.value, as: UTF8.self), "xattr \(x.name) of \(rel)")
            }
        }
        #expect(files > 10)
        // Nothing was written to the upper directory by reading.
        #expect(listNames(m.upper) == [])
    }
}
