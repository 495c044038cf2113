import CLinux

#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive
import LayerView
import UpperFormat
import Extraction

/// Writes a directory tree as the entries of an OCI layer, the way umoci writes layers: Go-style
/// tar (ustar unless a value needs PAX), directories with a trailing '/', empty uname/gname,
/// whole-second mtimes (truncated, and clamped to `mtimeClamp`), xattrs as SCHILY.xattr, the
/// first path of an inode a file and later ones hardlinks, entries in path order (a directory
/// before its contents, names in byte order).
///
/// A file named `.wh.NAME` is an OCI whiteout and becomes a whiteout entry (name only, mode 0,
/// mtime 0); `.wh..wh..opq` marks its directory opaque. This is exactly the format of a bundle's
/// upper directory, so repack is this walk over it.
///
/// The walk is anchored at directory file descriptors opened with O_NOFOLLOW: a symlink in the
/// tree is recorded, never followed. A file that changes while it is read (size, mtime or
/// ctime differ after reading, or it ends early) throws `FileChanged`, so a layer never holds a
/// torn file; the caller may start over.
public struct DirectoryDiff {
    public struct FileChanged: Error, CustomStringConvertible {
        public var path: String
        public var description: String { "\(path) changed while it was being read" }
        /// The one line every writer logs when this change makes it start the layer over.
        public var restartNotice: String { "\(self); starting the layer over" }
    }

    public enum Failure: Error, CustomStringConvertible {
        case store(StoreError)
        case changed(FileChanged)
        public var description: String {
            switch self {
            case .store(let e): return e.message
            case .changed(let c): return c.description
            }
        }
    }

    let writer: LayerBlobWriter
    /// Paths (cleaned, relative, no trailing slash) left out with everything below them.
    let masks: Set<ByteString>
    /// What was already packed (see UpperBaseline): unchanged entries are left out, and
    /// entries that have gone since get whiteouts.
    let baseline: UpperBaseline?
    /// Every entry walked, as a baseline for the next time.
    public private(set) var seen = UpperBaseline()
    var hardlinks: [UInt64: [UInt64: ByteString]] = [:]
    public private(set) var entryCount = 0
    /// `SOURCE_DATE_EPOCH`, when set: a file newer than it is recorded with this time, older
    /// ones keep theirs (as `tar --clamp-mtime`, and umoci 0.6's repack and insert).
    public var mtimeClamp: Int64?
    /// The image the walked upper directory changes, when known (repack of a mounted bundle):
    /// a directory whose mode, owner, mtime and xattrs are what the image has at its path is
    /// left out of the layer (it is in the upper directory only to hold a change below it),
    /// as umoci leaves out unchanged directories; and the root directory's own changes (mode,
    /// owner, mtime, xattrs) go in as a "." entry, as umoci writes it.
    public var base: MergedView?
    /// The map options of an extracted bundle unpacked with mappings or rootless: owners are
    /// mapped back (and taken from `user.rootlesscontainers`) before entries are written.
    public var ownership: RootlessOwnership?
    /// The buffer file contents are copied through, owned by a class so that copies of this
    /// struct share it and the last one frees it (no manual release to forget or repeat).
    private let copyBuffer = CopyBuffer(byteCount: 1 << 20)
    var buffer: UnsafeMutableRawBufferPointer { copyBuffer.bytes }

    public init(writer: LayerBlobWriter, masks: [String] = [], baseline: UpperBaseline? = nil) {
        self.writer = writer
        self.baseline = baseline
        self.masks = Set(masks.map { cleanComponents(ByteString($0)).joined(separator: "/") }.filter { !$0.isEmpty })
    }

    func isMasked(_ path: ByteString) -> Bool {
        if masks.isEmpty { return false }
        if masks.contains(path) { return true }
        return path.withBytes { bytes in
            var end = bytes.count
            while let slash = bytes[..<end].lastIndex(of: 0x2F) {
                end = slash
                if masks.contains(ByteString(bytes: bytes[..<end])) { return true }
            }
            return false
        }
    }

    /// Adds everything below the directory `root` (not the directory itself), with entry names
    /// `prefix` + relative path.
    public mutating func addContents(ofDirectory root: String, prefix: String = "") throws(Failure) {
        let fd: OwnedDescriptor
        do { fd = try OwnedDescriptor(opening: root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) } catch { throw .store(error) }
        if seen.started == nil { seen.started = UpperBaseline.fileSystemNow(besides: root) }
        if base != nil && prefix.isEmpty { try addRootIfChanged(fd.raw, displayPath: root) }
        try walk(directory: fd.raw, displayPath: root, relative: ByteString(prefix))
    }

    /// The root directory as a "." entry, when its metadata differs from the base image's root.
    mutating func addRootIfChanged(_ fd: Int32, displayPath: String) throws(Failure) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .store(.system("stat", displayPath)) }
        var entry = TarEntry(name: ".", type: .directory, mode: UInt32(st.st_mode & 0o7777), uid: Int64(st.st_uid),
                             gid: Int64(st.st_gid), size: 0, mtime: layerMtime(st.st_mtim))
        do { entry.xattrs = try Xattr.list(.descriptor(fd), path: displayPath) } catch { throw .store(error) }
        // The mtime counts as for any directory: umoci's mtree (tar_time) sees a root whose
        // mtime alone moved (a touch, a top-level entry created or removed) and writes ".".
        // Copy-up keeps the upper root's mtime, so a change deeper down does not move it.
        let mapped = try mapped(entry)
        if !isUnchangedDirectory(".", mapped) { try emit(mapped) }
    }

    /// Whether the directory entry (mode, owner, layer mtime, xattrs) is exactly what the base
    /// image has at `path`.
    func isUnchangedDirectory(_ path: ByteString, _ entry: TarEntry) -> Bool {
        guard let base, let node = path == "." ? MergedView.root : base.lookup(path) else { return false }
        let inode = base.inode(of: node)
        guard inode.type == .directory, inode.mode & 0o7777 == entry.mode, inode.uid == entry.uid, inode.gid == entry.gid,
              inode.mtime == entry.mtime else { return false }
        var theirs: [ByteString: [UInt8]] = [:]
        for x in inode.xattrs { theirs[x.name] = x.value }
        var ours: [ByteString: [UInt8]] = [:]
        for x in entry.xattrs { ours[x.name] = x.value }
        return theirs == ours
    }

    /// Adds one file, directory (with its contents) or symlink at `path` as the entry `name`.
    public mutating func add(path: String, as name: String) throws(Failure) {
        let parentPath = Files.directoryName(path)
        let base = ByteString(path).split().last ?? ByteString()
        let parent: OwnedDescriptor
        do { parent = try OwnedDescriptor(opening: parentPath, O_RDONLY | O_DIRECTORY) } catch { throw .store(error) }
        try addEntry(parent: parent.raw, name: base, displayPath: path, entryName: ByteString(name), recurse: true)
    }

    /// Adds the one entry at `path` (relative, "." for the root) below the open directory
    /// `root`, a directory without its contents; the parent is opened one component at a time,
    /// never following a symlink. `display` names `root` in errors.
    public mutating func addEntry(beneath root: Int32, path: ByteString, display: String) throws(Failure) {
        var components = cleanComponents(path)
        let name = components.popLast() ?? "."
        let shown = display + "/" + path.description
        let parent = Files.openDirectory(beneath: root, components)
        guard parent >= 0 else {
            if errno == ENOENT || errno == ENOTDIR || errno == ELOOP { throw .changed(FileChanged(path: shown)) }
            throw .store(.system("open", display + "/" + components.joined(separator: "/").description))
        }
        defer { close(parent) }
        try addEntry(parent: parent, name: name, displayPath: shown, entryName: path, recurse: false, useBaseline: false)
    }

    /// A whiteout entry for `name` (its parent path plus `.wh.` plus its base name).
    public mutating func addWhiteout(for path: String) throws(Failure) {
        try addWhiteout(for: ByteString(path))
    }

    package mutating func addWhiteout(for path: ByteString) throws(Failure) {
        var components = cleanComponents(path)
        guard let base = components.popLast() else { throw .store(StoreError(.invalidInput, "cannot white out the root")) }
        try emit(TarEntry(name: (components + [Whiteout.name(for: base)]).joined(separator: "/"), type: .regular, mode: 0))
    }

    /// An opaque marker for the directory `path`.
    public mutating func addOpaqueMarker(for path: String) throws(Failure) {
        try emit(TarEntry(name: (cleanComponents(ByteString(path)) + [Whiteout.opaqueMarker]).joined(separator: "/"), type: .regular, mode: 0))
    }

    /// Whiteouts for what the baseline had and the walk did not find any more (removed since
    /// it was packed): one for the topmost missing path (whose parent is still a directory
    /// here), none where a whiteout file was seen.
    public mutating func addWhiteoutsForRemovedEntries() throws(Failure) {
        guard let baseline else { return }
        for path in baseline.stamps.keys.sorted() where seen.stamps[path] == nil {
            var components = cleanComponents(path)
            guard let base = components.popLast(), !Whiteout.isWhiteout(base) else { continue }
            let parent = components.joined(separator: "/")
            if !parent.isEmpty, seen.stamps[parent].map(UpperBaseline.isDirectoryStamp) != true { continue }
            if seen.stamps[(components + [Whiteout.name(for: base)]).joined(separator: "/")] != nil { continue }
            try addWhiteout(for: path)
        }
    }

    /// Ends the archive.
    public mutating func finish() throws(Failure) {
        do { try writer.write(TarWriter.endOfArchive) } catch { throw .store(error) }
    }

    /// The mtime a layer records for a file: whole seconds, truncated as umoci 0.6 does (not
    /// rounded), then clamped to `mtimeClamp`.
    func layerMtime(_ time: timespec) -> Int64 {
        let seconds = Int64(time.tv_sec)
        if let mtimeClamp, seconds > mtimeClamp { return mtimeClamp }
        return seconds
    }

    /// An entry made from a file: its owner mapped back into the container first (umoci's
    /// mapHeader; see RootlessOwnership), when the tree was unpacked with mappings or rootless.
    mutating func emitMapped(_ entry: TarEntry) throws(Failure) {
        try emit(try mapped(entry))
    }

    /// The entry with its owner mapped back into the container (compared so with the base).
    func mapped(_ entry: TarEntry) throws(Failure) -> TarEntry {
        guard let ownership else { return entry }
        var entry = entry
        do { try ownership.containerEntry(&entry) } catch { throw .store(error) }
        return entry
    }

    mutating func emit(_ entry: TarEntry) throws(Failure) {
        do {
            try writer.write(try TarWriter.header(for: entry))
        } catch let e as StoreError {
            throw .store(e)
        } catch {
            throw .store(StoreError(.invalidInput, "\(entry.name): \(error)"))
        }
        entryCount += 1
    }

    /// `useBaseline`: false below a directory made opaque since the baseline, whose layer entry
    /// hides everything the base has there, so all of its contents must be written again.
    mutating func walk(directory fd: Int32, displayPath: String, relative: ByteString, useBaseline: Bool = true) throws(Failure) {
        let names: [ByteString]
        do { names = try Files.names(fd: fd, path: displayPath) } catch { throw .store(error) }
        var useBaseline = useBaseline
        if useBaseline, let baseline, names.contains(Whiteout.opaqueMarker) {
            let marker = relative.isEmpty ? Whiteout.opaqueMarker : relative + "/" + Whiteout.opaqueMarker
            var st = stat()
            if fstatat(fd, Whiteout.opaqueMarker.c, &st, AT_SYMLINK_NOFOLLOW) == 0, !baseline.unchanged(marker, st) {
                useBaseline = false
            }
        }
        for name in names.sorted() {
            try addEntry(parent: fd, name: name, displayPath: displayPath + "/" + name.description,
                         entryName: relative.isEmpty ? name : relative + "/" + name, recurse: true, useBaseline: useBaseline)
        }
    }

    mutating func addEntry(parent: Int32, name: ByteString, displayPath: String, entryName: ByteString, recurse: Bool,
                           useBaseline: Bool = true) throws(Failure) {
        if isMasked(entryName) { return }
        var st = stat()
        guard fstatat(parent, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
            if errno == ENOENT { throw .changed(FileChanged(path: displayPath)) }
            throw .store(.system("stat", displayPath))
        }
        let kind = st.st_mode & S_IFMT
        // Sockets have no tar representation (umoci skips them too); not being in the
        // baseline, they also stay in an upper directory that a rebase empties. A copy-up's
        // temporary file is the mount server's own.
        if kind == S_IFSOCK || UpperWhiteout.isInternal(name) { return }
        seen.stamps[entryName] = UpperBaseline.stamp(st)
        let unchanged = useBaseline && baseline?.unchanged(entryName, st) == true
        if Whiteout.isWhiteout(name) {
            // An OCI whiteout or opaque marker: its name is all that counts.
            if !unchanged { try emit(TarEntry(name: entryName, type: .regular, mode: 0)) }
            return
        }
        if UpperWhiteout.isDevice(st, name: name) {
            // The whiteout of a name too long for a `.wh.` file: the standard entry.
            if !unchanged {
                var components = cleanComponents(entryName)
                components[components.count - 1] = Whiteout.name(for: name)
                try emit(TarEntry(name: components.joined(separator: "/"), type: .regular, mode: 0))
            }
            return
        }
        if unchanged {
            // Packed before: only what is below a directory may have changed.
            if kind != S_IFDIR && st.st_nlink > 1, hardlinks[UInt64(st.st_dev)]?[UInt64(st.st_ino)] == nil {
                hardlinks[UInt64(st.st_dev), default: [:]][UInt64(st.st_ino)] = entryName
            }
            if kind == S_IFDIR && recurse {
                let fd = Files.retrying { openat(parent, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                guard fd >= 0 else { throw .store(.system("open", displayPath)) }
                defer { close(fd) }
                try walk(directory: fd, displayPath: displayPath, relative: entryName, useBaseline: useBaseline)
            }
            return
        }
        var entry = TarEntry(name: entryName, type: .regular, mode: UInt32(st.st_mode & 0o7777), uid: Int64(st.st_uid),
                             gid: Int64(st.st_gid), size: 0, mtime: layerMtime(st.st_mtim))

        if kind != S_IFDIR && st.st_nlink > 1 {
            if let first = hardlinks[UInt64(st.st_dev)]?[UInt64(st.st_ino)] {
                entry.type = .hardlink
                entry.linkName = first
                if ownership?.options.rootless == true {
                    // Rootless, the owner umoci writes on a hardlink too is in this xattr.
                    let all = (try? Xattr.list(.entry(parent: parent, name: name), path: displayPath)) ?? []
                    entry.xattrs = all.filter { $0.name == RootlessOwnership.xattrName }
                }
                try emitMapped(entry)
                return
            }
            hardlinks[UInt64(st.st_dev), default: [:]][UInt64(st.st_ino)] = entryName
        }

        switch kind {
        case S_IFDIR:
            let fd = Files.retrying { openat(parent, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard fd >= 0 else { throw .store(.system("open", displayPath)) }
            defer { close(fd) }
            entry.type = .directory
            entry.name = entryName == "." ? "." : entryName + "/"
            do { entry.xattrs = try Xattr.list(.descriptor(fd), path: displayPath) } catch { throw .store(error) }
            let mapped = try mapped(entry)
            if !isUnchangedDirectory(entryName, mapped) { try emit(mapped) }
            if recurse { try walk(directory: fd, displayPath: displayPath, relative: entryName, useBaseline: useBaseline) }
        case S_IFREG:
            let grant = ReadGrant(parent: parent, name: name.c, st: st)  // a rootless 0000 file
            defer { grant.restore() }
            let fd = Files.retrying { openat(parent, name.c, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            guard fd >= 0 else { throw .store(.system("open", displayPath)) }
            defer { close(fd) }
            var before = stat()
            guard fstat(fd, &before) == 0, before.st_ino == st.st_ino else { throw .changed(FileChanged(path: displayPath)) }
            entry.size = Int64(before.st_size)
            entry.mtime = layerMtime(before.st_mtim)
            do { entry.xattrs = try Xattr.list(.descriptor(fd), path: displayPath) } catch { throw .store(error) }
            try emitMapped(entry)
            try copyData(fd: fd, size: entry.size, path: displayPath)
            var after = stat()
            guard fstat(fd, &after) == 0, after.st_size == before.st_size,
                  after.st_mtim.tv_sec == before.st_mtim.tv_sec, after.st_mtim.tv_nsec == before.st_mtim.tv_nsec,
                  after.st_ctim.tv_sec == before.st_ctim.tv_sec, after.st_ctim.tv_nsec == before.st_ctim.tv_nsec else {
                throw .changed(FileChanged(path: displayPath))
            }
        case S_IFLNK:
            entry.type = .symlink
            var target = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlinkat(parent, name.c, &target, target.count)
            guard n >= 0 else { throw .store(.system("readlink", displayPath)) }
            entry.linkName = ByteString(bytes: target[0..<n])
            do { entry.xattrs = try Xattr.list(.entry(parent: parent, name: name), path: displayPath) } catch { throw .store(error) }
            try emitMapped(entry)
        case S_IFCHR, S_IFBLK, S_IFIFO:
            entry.type = kind == S_IFCHR ? .characterDevice : kind == S_IFBLK ? .blockDevice : .fifo
            if kind != S_IFIFO {
                entry.devMajor = umoci_major(st.st_rdev)
                entry.devMinor = umoci_minor(st.st_rdev)
            }
            do { entry.xattrs = try Xattr.list(.entry(parent: parent, name: name), path: displayPath) } catch { throw .store(error) }
            try emitMapped(entry)
        default:
            return
        }
    }

    func copyData(fd: Int32, size: Int64, path: String) throws(Failure) {
        var offset: Int64 = 0
        while offset < size {
            let want = Int(min(Int64(buffer.count), size - offset))
            let n = Files.retrying { pread(fd, buffer.baseAddress, want, off_t(offset)) }
            if n < 0 { throw .store(.system("read", path)) }
            if n == 0 { throw .changed(FileChanged(path: path)) }
            do { try writer.write(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) } catch { throw .store(error) }
            offset += Int64(n)
        }
        do { try writer.writeZeros(TarWriter.padding(forSize: size)) } catch { throw .store(error) }
    }
}

/// A buffer allocated once and freed with its last owner.
private final class CopyBuffer {
    let bytes: UnsafeMutableRawBufferPointer
    init(byteCount: Int) { bytes = .allocate(byteCount: byteCount, alignment: 64) }
    deinit { bytes.deallocate() }
}
