# The app a device runs when it has no app.py: print each message received as one line,
# "<sender uuid>: <text>" (hex when the bytes are not UTF-8). Replace it with your app.py.
from binascii import hexlify


def main(device):
    device.on_message(lambda peer, data: print("%s: %s" % (peer, text(data))))


def text(data):
    try:
        return data.decode()
    except UnicodeError:
        return hexlify(data).decode()
