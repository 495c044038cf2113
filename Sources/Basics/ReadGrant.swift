#if canImport(Glibc)
import Glibc
#endif

/// umoci's `unpriv` trick for a user other than root reading a rootless rootfs: a regular file
/// the user owns but may not read (mode 0000, as Fedora's /etc/shadow; its user.* xattrs
/// cannot be read either) gets u+r for as long as it is read, then its mode back. For root, or
/// a readable file, it does nothing.
public struct ReadGrant {
    let parent: Int32
    let name: [CChar]
    /// The permission bits to put back; nil when nothing was changed.
    let saved: mode_t?

    /// `st` is `name`'s lstat in the directory `parent`.
    public init(parent: Int32, name: UnsafePointer<CChar>, st: stat) {
        self.parent = parent
        self.name = Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))
        let mode = st.st_mode & 0o7777
        guard geteuid() != 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid(), mode & 0o400 == 0,
              Files.chmodNoFollow(parent, name, mode | 0o400) == 0 else {
            saved = nil
            return
        }
        saved = mode
    }

    /// `st_mode` as it is without the grant.
    public func original(_ mode: mode_t) -> mode_t {
        guard let saved else { return mode }
        return (mode & ~0o7777) | saved
    }

    /// Puts the mode back (errno is left as it was).
    public func restore() {
        guard let saved else { return }
        let code = errno
        _ = name.withUnsafeBufferPointer { Files.chmodNoFollow(parent, $0.baseAddress!, saved) }
        errno = code
    }
}
