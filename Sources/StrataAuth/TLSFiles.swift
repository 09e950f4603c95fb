import NIOSSL

/// TLS contexts from PEM files, for every listener and client that takes certificate files
/// (the MQTT listeners, the journal protocol and its clients). A file that cannot be used is a
/// `ConfigFileError` naming it.
public enum TLSFiles {
    /// The common name a verified peer certificate names (the principal of a client
    /// certificate), nil when it has none that can be read safely. NIOSSLCertificate shows its
    /// common name only in its description:
    /// "<NIOSSLCertificate;serial_number=HEX;common_name=NAME[;alternative_names=…]>". The name
    /// must follow the serial number directly and be followed by one of those two endings, so
    /// that a name holding ";" or ">" (or text in an alternative name) is refused.
    public static func commonName(of certificate: NIOSSLCertificate) -> String? {
        let text = certificate.description
        let prefix = "<NIOSSLCertificate;serial_number="
        guard text.hasPrefix(prefix) else { return nil }
        let afterSerial = text.dropFirst(prefix.count).drop { $0.isHexDigit }
        guard afterSerial.hasPrefix(";common_name=") else { return nil }
        let rest = afterSerial.dropFirst(";common_name=".count)
        let name = rest.prefix { $0 != ";" && $0 != ">" }
        let tail = rest.dropFirst(name.count)
        guard !name.isEmpty, tail == ">" || tail.hasPrefix(";alternative_names=") else { return nil }
        return String(name)
    }

    /// A server's context: its certificate chain and key; with `clientCA`, client certificates
    /// signed by it are required and verified (mutual TLS).
    public static func serverContext(certificate: String, key: String, clientCA: String? = nil) throws -> NIOSSLContext
    {
        do {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try chain(certificate),
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            if let clientCA {
                configuration.trustRoots = .file(clientCA)
                configuration.certificateVerification = .noHostnameVerification
            }
            return try NIOSSLContext(configuration: configuration)
        } catch let error as ConfigFileError {
            throw error
        } catch {
            throw ConfigFileError("TLS certificate \(certificate) / key \(key): \(error)")
        }
    }

    /// A client's context: the CA that signed the server's certificate, and optionally the
    /// client's own certificate and key.
    public static func clientContext(ca: String, certificate: String? = nil, key: String? = nil) throws -> NIOSSLContext
    {
        do {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .file(ca)
            switch (certificate, key) {
            case (let certificate?, let key?):
                configuration.certificateChain = try chain(certificate)
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            case (nil, nil):
                break
            default:
                throw ConfigFileError("a client certificate needs both its certificate and key file")
            }
            return try NIOSSLContext(configuration: configuration)
        } catch let error as ConfigFileError {
            throw error
        } catch {
            throw ConfigFileError("TLS settings (CA \(ca)): \(error)")
        }
    }

    private static func chain(_ path: String) throws -> [NIOSSLCertificateSource] {
        let chain = try NIOSSLCertificate.fromPEMFile(path)
        guard !chain.isEmpty else { throw ConfigFileError("no certificate in \(path)") }
        return chain.map { .certificate($0) }
    }
}
