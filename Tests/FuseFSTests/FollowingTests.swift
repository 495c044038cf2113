#if canImport(Glibc)
import Glibc
#endif
import FuseFS
import Synchronization
import Testing

/// MountOptions.following: the mount detaches itself (once) when its root is emptied through
/// it, or at a root opendir once its owner says it is going away; without it, it stays.
@Suite("FuseFS following", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct FollowingTests {
    /// A mount that follows an owner whose "gone" state the test sets; the reasons it detached.
    final class Owner: Sendable {
        let gone = Atomic<Bool>(false)
        let reasons = Mutex<[String]>([])
        var options: MountOptions {
            var o = MountOptions()
            o.following = Following(ownerGone: { _ in self.gone.load(ordering: .sequentiallyConsistent) },
                                    detached: { reason in self.reasons.withLock { $0.append(reason) } })
            return o
        }
    }

    func emptyRoot(_ m: Mounted) -> Int32 {
        run("find '\(m.mnt)' -mindepth 1 -maxdepth 1 -exec rm -rf {} +")
    }

    @Test func emptyingTheRootDetaches() throws {
        let owner = Owner()
        let m = try Mounted(options: owner.options)
        defer { m.close() }
        #expect(emptyRoot(m) == 0)
        #expect(!Mounted.isMounted(m.mnt))
        #expect(owner.reasons.withLock { $0 } == ["the root directory was emptied through the mount"])
        // The mount point is a plain directory again: it can be removed.
        #expect(err(rmdir(m.mnt)) == 0)
    }

    @Test func withoutFollowingTheEmptiedRootStaysMounted() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(emptyRoot(m) == 0)
        #expect(Mounted.isMounted(m.mnt))
        #expect(listNames(m.mnt) == [])
        #expect(err(rmdir(m.mnt)) == EBUSY)
    }

    /// Removing one entry of several, or renaming within the root, keeps the mount.
    @Test func aRootThatIsNotEmptyStays() throws {
        let owner = Owner()
        let m = try Mounted(options: owner.options)
        defer { m.close() }
        #expect(run("rm -rf '\(m.path("etc"))'") == 0)
        #expect(err(rename(m.path("bin"), m.path("bin2"))) == 0)
        #expect(Mounted.isMounted(m.mnt))
        #expect(owner.reasons.withLock { $0 }.isEmpty)
    }

    /// Once the owner is going away, the root's next opendir detaches and lists nothing, so a
    /// recursive delete that reaches the mount point removes nothing through it.
    @Test func ownerGoneListsAnEmptyRootAndDetaches() throws {
        let owner = Owner()
        let m = try Mounted(options: owner.options)
        defer { m.close() }
        #expect(listNames(m.mnt)?.contains("etc") == true)
        #expect(Mounted.isMounted(m.mnt))
        owner.gone.store(true, ordering: .sequentiallyConsistent)
        let fd = open(m.path("etc/hostname"), O_RDONLY | O_NOFOLLOW)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(listNames(m.mnt) == [])
        #expect(!Mounted.isMounted(m.mnt))
        #expect(owner.reasons.withLock { $0 } == ["the mount's owner is being deleted"])
        // An open file keeps working after the detach.
        var buf = [UInt8](repeating: 0, count: 16)
        #expect(pread(fd, &buf, 16, 0) == 5)
        #expect(err(rmdir(m.mnt)) == 0)
    }

    /// detach(reason:) from the owner: once only, and serve() returns when nothing is open.
    @Test func detachFromTheOwner() throws {
        let owner = Owner()
        let m = try Mounted(options: owner.options)
        defer { m.close() }
        m.server.detach(reason: "first")
        m.server.detach(reason: "second")
        #expect(!Mounted.isMounted(m.mnt))
        #expect(owner.reasons.withLock { $0 } == ["first"])
    }
}
