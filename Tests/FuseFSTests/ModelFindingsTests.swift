#if canImport(Glibc)
import Glibc
#endif
import CLinux
import FuseFS
import LayerStore
import Testing

/// Divergences from a plain ext4 directory that the model-based test (umociTests ModelTests)
/// found, each reduced to its shortest sequence.
@Suite("FuseFS model findings", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct ModelFindingsTests {
    /// A change through one name of an image hardlink group copies the group up, creating the
    /// upper directories of the other names. A directory the kernel had looked up before
    /// (here `etc`, as unpack's config generation does) must then be resolved in the upper
    /// directory too: `etc/hard-c` showed the image's data and a link count of 4.
    @Test func groupCopyUpThroughAnotherNameUpdatesKnownDirectories() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(lstatOrNil(m.path("etc/hostname")) != nil)
        #expect(writeFile(m.path("hard-b"), "CHANGED\n", flags: O_WRONLY) == 0)
        #expect(readText(m.path("etc/hard-c")) == "CHANGED\nontent\n")
        let st = try #require(lstatOrNil(m.path("etc/hard-c")))
        #expect(st.st_nlink == 4)
        #expect(st.st_ino == lstatOrNil(m.path("hard-b"))?.st_ino)
    }
}
