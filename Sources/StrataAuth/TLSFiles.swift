import NIOSSL

/// TLS contexts from PEM files, for every listener and client that takes certificate files
/// (the MQTT listeners, the journal protocol and its clients). A file that cannot be used is a
/// `ConfigFileError` naming it.
public enum TLSFiles {
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
