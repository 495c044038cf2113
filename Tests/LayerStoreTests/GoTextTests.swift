import Testing
@testable import OCI

/// Go's text formatting as umoci's stat output uses it. Expected values follow Go's
/// strconv.Quote (strconv/quote.go: appendEscapedRune), unicode.IsSpace, go-units' HumanSize
/// (`CustomSize("%.4g%s", size, 1000.0, decimapAbbrs)`) and encoding/base64's StdEncoding.
@Suite struct GoTextTests {
    @Test func quoteEscapesAsStrconvQuote() {
        #expect(GoText.quote("abc") == #""abc""#)
        #expect(GoText.quote("a\"b\\c") == #""a\"b\\c""#)
        #expect(GoText.quote("\u{07}\u{08}\u{0C}\n\r\t\u{0B}") == #""\a\b\f\n\r\t\v""#)
        #expect(GoText.quote("\u{01}\u{1F}\u{7F}") == #""\x01\x1f\x7f""#)
        // Printable runes stay; spaces other than U+0020, format and private-use runes do not.
        #expect(GoText.quote("é😀 ") == "\"é😀 \"")
        #expect(GoText.quote("\u{A0}\u{AD}\u{2028}\u{E000}") == #""\u00a0\u00ad\u2028\ue000""#)
        #expect(GoText.quote("\u{10FFFD}") == #""\U0010fffd""#)
    }

    @Test func quoteIfNeededAsUmoci() {
        // umoci 0.6 utils.go quote(s, precise).
        #expect(GoText.quoteIfNeeded("plain", precise: true) == "plain")
        #expect(GoText.quoteIfNeeded("", precise: true) == #""""#)
        #expect(GoText.quoteIfNeeded("", precise: false) == "")
        #expect(GoText.quoteIfNeeded("a b", precise: true) == #""a b""#)
        #expect(GoText.quoteIfNeeded("a b", precise: false) == "a b")
        #expect(GoText.quoteIfNeeded("a\tb", precise: false) == #""a\tb""#)
        #expect(GoText.quoteIfNeeded("a,b", precise: true) == "a,b")
    }

    @Test func humanSizeAsGoUnits() {
        #expect(GoText.humanSize(0) == "0B")
        #expect(GoText.humanSize(999) == "999B")
        #expect(GoText.humanSize(1000) == "1kB")
        #expect(GoText.humanSize(1234) == "1.234kB")
        #expect(GoText.humanSize(999_999) == "1000kB")
        #expect(GoText.humanSize(1_234_567) == "1.235MB")
        #expect(GoText.humanSize(5_000_000_000) == "5GB")
    }

    @Test func base64AsStdEncoding() {
        #expect(Base64.decode("e30=") == [0x7B, 0x7D])
        #expect(Base64.decode("") == [])
        #expect(Base64.decode("YQ==") == Array("a".utf8))
        #expect(Base64.decode("YWI=") == Array("ab".utf8))
        #expect(Base64.decode("YWJj") == Array("abc".utf8))
        #expect(Base64.decode("YQ") == nil)
        #expect(Base64.decode("Y@==") == nil)
        #expect(Base64.decode("YQ==YQ==") == nil)
        let all = (0...255).map { UInt8($0) }
        #expect(Base64.decode(Base64.encode(all)) == all)
        #expect(Base64.encode(Array("ab".utf8)) == "YWI=")
    }
}
