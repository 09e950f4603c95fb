#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Unbuffered output: results on standard output, progress and notes on standard error. Each
/// call is one `write(2)` per chunk, so short lines from concurrent tasks never interleave.
enum Console {
    static func out(_ text: String) {
        emit(text, to: 1)
    }

    static func error(_ text: String) {
        emit(text, to: 2)
    }

    private static func emit(_ text: String, to fd: Int32) {
        var text = text
        text.withUTF8 { bytes in
            var done = 0
            while done < bytes.count {
                let written = write(fd, bytes.baseAddress! + done, bytes.count - done)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                done += written
            }
        }
    }
}
