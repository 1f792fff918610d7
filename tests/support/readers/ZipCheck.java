// Reads every entry of a zip with java.util.zip.ZipFile and again with the streaming
// java.util.zip.ZipInputStream, checking each entry's CRC-32 against the bytes read.
//
//     java ZipCheck.java <zip>
//
// For each reader it prints the entry names, one per line ("<reader>\tname\t<name>"), then
// "<reader>\tbytes\t<total>\t<CRC-32 of every entry's bytes, in order>". Exit status 1 (and
// the exception on stderr) if a reader refuses the archive or a CRC does not match.
import java.io.BufferedInputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Enumeration;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipException;
import java.util.zip.ZipFile;
import java.util.zip.ZipInputStream;

public class ZipCheck {
    private static final PrintStream OUT =
        new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

    public static void main(String[] args) throws Exception {
        String path = args[0];
        zipFile(path);
        zipInputStream(path);
    }

    private static void zipFile(String path) throws Exception {
        CRC32 all = new CRC32();
        long total = 0;
        try (ZipFile zip = new ZipFile(path, StandardCharsets.UTF_8)) {
            Enumeration<? extends ZipEntry> entries = zip.entries();
            while (entries.hasMoreElements()) {
                ZipEntry entry = entries.nextElement();
                try (InputStream in = zip.getInputStream(entry)) {
                    long crc = readAll(in, all);
                    check("ZipFile", entry, crc);
                    total += entry.getSize();
                }
                OUT.println("ZipFile\tname\t" + entry.getName());
            }
        }
        OUT.println("ZipFile\tbytes\t" + total + "\t" + all.getValue());
    }

    private static void zipInputStream(String path) throws Exception {
        CRC32 all = new CRC32();
        long total = 0;
        try (ZipInputStream zip = new ZipInputStream(
                new BufferedInputStream(new FileInputStream(path), 1 << 16), StandardCharsets.UTF_8)) {
            ZipEntry entry;
            while ((entry = zip.getNextEntry()) != null) {
                long crc = readAll(zip, all);  // ZipInputStream checks the CRC itself at the end
                check("ZipInputStream", entry, crc);  // and the entry knows it now, descriptor or not
                total += entry.getSize();
                OUT.println("ZipInputStream\tname\t" + entry.getName());
            }
        }
        OUT.println("ZipInputStream\tbytes\t" + total + "\t" + all.getValue());
    }

    private static long readAll(InputStream in, CRC32 all) throws IOException {
        CRC32 crc = new CRC32();
        byte[] buffer = new byte[1 << 16];
        int read;
        while ((read = in.read(buffer)) > 0) {
            crc.update(buffer, 0, read);
            all.update(buffer, 0, read);
        }
        return crc.getValue();
    }

    private static void check(String reader, ZipEntry entry, long crc) throws ZipException {
        if (entry.getCrc() != crc) {
            throw new ZipException(reader + ": bad CRC for " + entry.getName() + ": "
                + Long.toHexString(crc) + " != " + Long.toHexString(entry.getCrc()));
        }
    }
}
