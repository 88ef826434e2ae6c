import java.io.BufferedInputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;

/**
 * Reads a ZIP front to back with java.util.zip.ZipInputStream, as streaming consumers do,
 * without the central directory. ZipInputStream itself rejects a STORED entry with a data
 * descriptor and checks each entry's CRC and sizes against its descriptor; this also
 * compares them with what it read. Prints "name\tsize\tcrc32" per entry, then a total.
 *
 * Run as a source file: java ZipStreamCheck.java ARCHIVE [--quiet]
 */
public class ZipStreamCheck {
    public static void main(String[] args) throws IOException {
        boolean quiet = args.length > 1 && args[1].equals("--quiet");
        long entries = 0;
        long bytes = 0;
        byte[] buf = new byte[1 << 16];
        try (ZipInputStream zin = new ZipInputStream(
                new BufferedInputStream(new FileInputStream(args[0]), 1 << 16))) {
            ZipEntry e;
            while ((e = zin.getNextEntry()) != null) {
                CRC32 crc = new CRC32();
                long n = 0;
                int r;
                while ((r = zin.read(buf)) > 0) {
                    crc.update(buf, 0, r);
                    n += r;
                }
                if (e.getSize() != -1 && e.getSize() != n) {
                    throw new IOException(e.getName() + ": size " + e.getSize() + ", read " + n);
                }
                if (e.getCrc() != -1 && e.getCrc() != crc.getValue()) {
                    throw new IOException(e.getName() + ": CRC mismatch");
                }
                entries++;
                bytes += n;
                if (!quiet) {
                    System.out.println(e.getName() + "\t" + n + "\t" + String.format("%08x", crc.getValue()));
                }
            }
        }
        System.out.println("total\t" + entries + "\t" + bytes);
    }
}
