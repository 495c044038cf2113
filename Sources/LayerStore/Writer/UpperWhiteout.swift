#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// How a bundle's upper directory records that a name of the image is deleted.
///
/// The OCI form is an empty file `.wh.NAME` beside it. Linux names have at most 255 bytes, so
/// for a NAME of 252 bytes or more that file cannot exist: such a name is whited out by a
/// character device 0/0 at NAME itself (overlayfs's form, which Linux lets anyone create).
/// Whatever the form, repack writes the standard `.wh.NAME` tar entry.
///
/// Names starting with `.wh..wh.` other than the opaque marker are this tool's own (temporary
/// files of a copy-up in progress): never shown, never packed, removed when a bundle is mounted.
public enum UpperWhiteout {
    public static let prefix: ByteString = ".wh."
    public static let opaqueMarker: ByteString = ".wh..wh..opq"
    public static let internalPrefix: ByteString = ".wh..wh."
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
        name.hasPrefix(internalPrefix) && name != opaqueMarker
    }

    /// Whether dirfd holds a whiteout for `name`.
    public static func exists(_ dirfd: Int32, _ name: ByteString) -> Bool {
        var st = stat()
        if usesDevice(name) { return fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 && isDevice(st, name: name) }
        return fstatat(dirfd, (prefix + name).c, &st, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// Records `name` as deleted (nothing there must exist when it is a device whiteout).
    /// Returns 0, or -1 with errno set; an existing whiteout counts as made.
    public static func make(_ dirfd: Int32, _ name: ByteString) -> Int32 {
        if usesDevice(name) {
            if mknodat(dirfd, name.c, S_IFCHR | 0o000, 0) == 0 { return 0 }
            if errno == EEXIST && exists(dirfd, name) { return 0 }
            return -1
        }
        let fd = openat(dirfd, (prefix + name).c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 { return errno == EEXIST ? 0 : -1 }
        close(fd)
        return 0
    }

    /// Removes the whiteout for `name`, if there is one. Returns 0, or -1 with errno set.
    public static func remove(_ dirfd: Int32, _ name: ByteString) -> Int32 {
        if usesDevice(name) {
            guard exists(dirfd, name) else { return 0 }
            return unlinkat(dirfd, name.c, 0) == 0 || errno == ENOENT ? 0 : -1
        }
        return unlinkat(dirfd, (prefix + name).c, 0) == 0 || errno == ENOENT ? 0 : -1
    }
}
