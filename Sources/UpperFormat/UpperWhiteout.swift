#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics
import Archive

/// How a bundle's upper directory records that a name of the image is deleted.
///
/// The OCI form is an empty file `.wh.NAME` beside it. Linux names have at most 255 bytes, so
/// for a NAME of 252 bytes or more that file cannot exist: such a name is whited out by a
/// character device 0/0 at NAME itself (overlayfs's form, which Linux lets anyone create).
/// Whatever the form, repack writes the standard `.wh.NAME` tar entry.
///
/// `.wh.` files are hardlinks of one empty file, `.wh..wh..umoci-whiteout` in the upper root
/// (overlayfs shares one whiteout inode the same way): a new inode per deletion made `rm -rf`
/// through the mount spend most of its time in ext4's inode allocator. Their baseline stamps
/// therefore do not count their shared inode's ctime (UpperBaseline.unchanged).
///
/// Names starting with `.wh..wh.` other than the opaque marker are this tool's own (that shared
/// file, temporary files of a copy-up in progress): never shown, never packed, removed when a
/// bundle is mounted.
public enum UpperWhiteout {
    /// The longest name whose `.wh.` file fits in a name.
    public static let longestFileForm = Int(NAME_MAX) - 4

    /// Whether `name` is whited out by a device at the name itself.
    public static func usesDevice(_ name: ByteString) -> Bool { name.count > longestFileForm }

    /// Whether the object `st` at `name` is a device whiteout.
    public static func isDevice(_ st: stat, name: ByteString) -> Bool {
        usesDevice(name) && (st.st_mode & S_IFMT) == S_IFCHR && st.st_rdev == 0
    }

    /// Whether `name` in an upper directory is this tool's own temporary file.
    public static func isInternal(_ name: ByteString) -> Bool {
        name.hasPrefix(Whiteout.reservedPrefix) && name != Whiteout.opaqueMarker
    }

    /// Whether dirfd holds a whiteout for `name`.
    public static func exists(_ dirfd: Int32, _ name: ByteString) -> Bool {
        var st = stat()
        if usesDevice(name) { return fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 && isDevice(st, name: name) }
        return fstatat(dirfd, Whiteout.name(for: name).c, &st, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// The empty file every `.wh.` file of an upper directory is a hardlink of, in its root.
    public static let sharedName: ByteString = Whiteout.reservedPrefix + ".umoci-whiteout"

    /// Records `name` as deleted in `dirfd`, a directory of the upper directory whose root is
    /// `root` (nothing there must exist when it is a device whiteout). Returns 0, or -1 with
    /// errno set; an existing whiteout counts as made.
    public static func make(_ dirfd: Int32, _ name: ByteString, root: Int32) -> Int32 {
        if usesDevice(name) {
            if mknodat(dirfd, name.c, S_IFCHR | 0o000, 0) == 0 { return 0 }
            if errno == EEXIST && exists(dirfd, name) { return 0 }
            return -1
        }
        let whiteout = Whiteout.name(for: name)
        for _ in 0..<3 {
            if linkat(root, sharedName.c, dirfd, whiteout.c, 0) == 0 { return 0 }
            switch errno {
            case EEXIST: return 0
            case ENOENT, EMLINK:
                // No shared file yet (or it has as many links as the file system allows): a new
                // one, renamed into place so that a concurrent link never sees none.
                if makeShared(root) != 0 { return -1 }
            default:
                return makeFile(dirfd, whiteout)
            }
        }
        return makeFile(dirfd, whiteout)
    }

    private static func makeFile(_ dirfd: Int32, _ whiteout: ByteString) -> Int32 {
        let fd = openat(dirfd, whiteout.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 { return errno == EEXIST ? 0 : -1 }
        close(fd)
        return 0
    }

    /// Makes the shared file, leaving the root's times as they were (the mount shows them).
    private static func makeShared(_ root: Int32) -> Int32 {
        var before = stat()
        if fstat(root, &before) != 0 { return -1 }
        defer {
            let saved = errno
            var times = (before.st_atim, before.st_mtim)
            _ = withUnsafePointer(to: &times) { p in
                p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(root, "", $0, 0x1000 /* AT_EMPTY_PATH */) }
            }
            errno = saved
        }
        let temp = sharedName + ByteString("-" + String(UInt64.random(in: 0...UInt64.max), radix: 16))
        let fd = openat(root, temp.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 { return -1 }
        close(fd)
        if renameat(root, temp.c, root, sharedName.c) != 0 {
            let saved = errno
            unlinkat(root, temp.c, 0)
            errno = saved
            return -1
        }
        return 0
    }

    /// Whether `name` (a base name in the upper directory) is a `.wh.` file: empty and
    /// meaningful by its name alone (not the opaque marker, which marks its directory).
    public static func isWhiteoutFile(_ name: ByteString) -> Bool {
        Whiteout.isWhiteout(name) && !name.hasPrefix(Whiteout.reservedPrefix)
    }

    /// Removes the whiteout for `name`, if there is one. Returns 0, or -1 with errno set.
    public static func remove(_ dirfd: Int32, _ name: ByteString) -> Int32 {
        if usesDevice(name) {
            guard exists(dirfd, name) else { return 0 }
            return unlinkat(dirfd, name.c, 0) == 0 || errno == ENOENT ? 0 : -1
        }
        return unlinkat(dirfd, Whiteout.name(for: name).c, 0) == 0 || errno == ENOENT ? 0 : -1
    }
}
