#if canImport(Glibc)
import Glibc
#endif
import CLinux
@testable import FuseFS
import Testing

/// The kernel asks a FUSE mount for security.capability before every write (no inode of a FUSE
/// mount is ever marked S_NOSEC). A file the mount created answers that from the node table;
/// the answer must stay what ext4 would give whatever is done to the file.
@Suite("FuseFS security.capability of files the mount created", .serialized,
       .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct CapabilityTests {
    /// A valid VFS_CAP_REVISION_2 value: effective, permitted CAP_NET_RAW.
    static let capability: [UInt8] = [0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]

    func capabilitySize(_ path: String) -> Int {
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = lgetxattr(path, "security.capability", &buffer, buffer.count)
        return n >= 0 ? n : -Int(errno)
    }

    func setCapability(_ path: String) -> Int32 {
        CapabilityTests.capability.withUnsafeBytes { lsetxattr(path, "security.capability", $0.baseAddress, $0.count, 0) }
    }

    @Test func writesToACreatedFileAskNothingOfTheUpperDirectory() throws {
        let m = try Mounted()
        defer { m.close() }
        let fd = open(m.path("made"), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o755)
        try #require(fd >= 0)
        let asked = m.server.requestCount(.getxattr)
        let before = m.server.fs.upperXattrCalls.load(ordering: .relaxed)
        for _ in 0..<20 { #expect(write(fd, "x", 1) == 1) }
        close(fd)
        #expect(m.server.requestCount(.getxattr) - asked >= 20, "the kernel asks before each write")
        #expect(m.server.fs.upperXattrCalls.load(ordering: .relaxed) == before)
        #expect(capabilitySize(m.path("made")) == -Int(ENODATA))
        #expect(readText(m.path("made")) == String(repeating: "x", count: 20))
    }

    @Test func aCapabilitySetAfterwardsShowsAndAWriteDropsIt() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(writeFile(m.path("tool"), "v1", flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o755) == 0)
        #expect(setCapability(m.path("tool")) == 0)
        #expect(capabilitySize(m.path("tool")) == CapabilityTests.capability.count)
        // As on ext4, writing to a file drops its capability.
        #expect(writeFile(m.path("tool"), "v2", flags: O_WRONLY | O_TRUNC | O_NOFOLLOW) == 0)
        #expect(capabilitySize(m.path("tool")) == -Int(ENODATA))
        #expect(capabilitySize(m.upperPath("tool")) == -Int(ENODATA))
    }

    @Test func aCapabilitySetThroughAnotherNameShowsThroughEveryName() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(writeFile(m.path("a"), "shared", flags: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o755) == 0)
        #expect(capabilitySize(m.path("a")) == -Int(ENODATA))
        #expect(link(m.path("a"), m.path("b")) == 0)
        #expect(setCapability(m.path("b")) == 0)
        #expect(capabilitySize(m.path("a")) == CapabilityTests.capability.count)
        // A write through the first name drops it for both, as on ext4.
        let fd = open(m.path("a"), O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC)
        try #require(fd >= 0)
        #expect(write(fd, "!", 1) == 1)
        close(fd)
        #expect(capabilitySize(m.path("b")) == -Int(ENODATA))
        #expect(readText(m.path("b")) == "shared!")
    }
}
