import CZstd
import Basics

enum Zstd {
    static let outputBufferSize = 256 * 1024

    static func errorName(_ code: Int) -> String {
        String(cString: ZSTD_getErrorName(code))
    }
}

/// Streaming zstd decompression of one blob: any number of frames, skippable frames allowed.
/// Frames may use windows up to 512 MiB (window log 29, the limit of Go's klauspost/compress
/// decoder on 64-bit), more than libzstd's default of 128 MiB.
public final class ZstdDecoder {
    private let context: OpaquePointer
    private let outputBuffer: UnsafeMutablePointer<UInt8>
    /// libzstd's last hint: 0 when the input so far ends exactly at a frame boundary.
    private var pendingHint = 0
    private var failure: StoreError?

    public init() throws(StoreError) {
        guard let context = ZSTD_createDCtx() else { throw StoreError(.systemCall, "zstd: cannot create a decompression context") }
        self.context = context
        outputBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Zstd.outputBufferSize)
        let ret = ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, 29)
        if ZSTD_isError(ret) != 0 { throw StoreError(.systemCall, "zstd: window size limit: \(Zstd.errorName(ret))") }
    }

    deinit {
        ZSTD_freeDCtx(context)
        outputBuffer.deallocate()
    }

    /// Decompresses `input`, calling `output` with each produced chunk (views of one internal
    /// buffer, valid only during the call). All output the input allows is delivered before
    /// returning.
    public func decode(_ input: UnsafeRawBufferPointer,
                       output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        if let failure { throw failure }
        guard let base = input.baseAddress, input.count > 0 else { return }
        var inBuffer = ZSTD_inBuffer(src: base, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: outputBuffer, size: Zstd.outputBufferSize, pos: 0)
        do throws(StoreError) {
            while true {
                let ret = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                if ZSTD_isError(ret) != 0 {
                    throw StoreError(.corrupt, "corrupt zstd stream: \(Zstd.errorName(ret))")
                }
                pendingHint = ret
                if outBuffer.pos == outBuffer.size {
                    // Full: deliver, and call again since more output may be buffered inside.
                    try output(UnsafeRawBufferPointer(start: outputBuffer, count: outBuffer.pos))
                    outBuffer.pos = 0
                } else if inBuffer.pos == inBuffer.size {
                    break
                }
            }
            if outBuffer.pos > 0 {
                try output(UnsafeRawBufferPointer(start: outputBuffer, count: outBuffer.pos))
            }
        } catch {
            failure = error
            throw error
        }
    }

    /// Marks the end of input: "truncated zstd stream" when a frame is incomplete.
    public func finish() throws(StoreError) {
        if let failure { throw failure }
        if pendingHint != 0 {
            let error = StoreError(.corrupt, "truncated zstd stream")
            failure = error
            throw error
        }
    }
}

/// Streaming zstd compression into one frame, with a content checksum (as the zstd CLI and Go's
/// klauspost/compress write by default).
public final class ZstdEncoder {
    private let context: OpaquePointer
    private let outputBuffer: UnsafeMutablePointer<UInt8>
    private var finished = false

    public init(level: Int32 = 3) throws(StoreError) {
        guard let context = ZSTD_createCCtx() else { throw StoreError(.systemCall, "zstd: cannot create a compression context") }
        self.context = context
        outputBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Zstd.outputBufferSize)
        var ret = ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        if ZSTD_isError(ret) != 0 { throw StoreError(.invalidInput, "zstd: compression level \(level): \(Zstd.errorName(ret))") }
        ret = ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
        if ZSTD_isError(ret) != 0 { throw StoreError(.systemCall, "zstd: checksum flag: \(Zstd.errorName(ret))") }
    }

    deinit {
        ZSTD_freeCCtx(context)
        outputBuffer.deallocate()
    }

    /// Compresses `input`, calling `output` with each chunk of compressed bytes produced.
    public func encode(_ input: UnsafeRawBufferPointer,
                       output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        guard !finished else { throw StoreError(.invalidInput, "zstd: encode after finish") }
        guard let base = input.baseAddress, input.count > 0 else { return }
        var inBuffer = ZSTD_inBuffer(src: base, size: input.count, pos: 0)
        while inBuffer.pos < inBuffer.size {
            _ = try step(&inBuffer, ZSTD_e_continue, output)
        }
    }

    /// Ends the frame, delivering everything still buffered.
    public func finish(output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        guard !finished else { return }
        var inBuffer = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        while try step(&inBuffer, ZSTD_e_end, output) != 0 {}
        finished = true
    }

    /// One compressStream2 call into the output buffer; delivers what it produced and returns
    /// libzstd's remaining-to-flush hint.
    private func step(_ inBuffer: inout ZSTD_inBuffer, _ directive: ZSTD_EndDirective,
                      _ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) -> Int {
        var outBuffer = ZSTD_outBuffer(dst: outputBuffer, size: Zstd.outputBufferSize, pos: 0)
        let ret = ZSTD_compressStream2(context, &outBuffer, &inBuffer, directive)
        if ZSTD_isError(ret) != 0 { throw StoreError(.systemCall, "zstd: compress: \(Zstd.errorName(ret))") }
        if outBuffer.pos > 0 { try output(UnsafeRawBufferPointer(start: outputBuffer, count: outBuffer.pos)) }
        return ret
    }
}
