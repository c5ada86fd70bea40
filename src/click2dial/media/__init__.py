"""The media plane: Click2Dial's control of an external media relay.

Click2Dial itself never touches RTP.  When a call joins a browser (ICE,
DTLS-SRTP) to a plain RTP peer, the SDP of each side is rewritten by
rtpengine (:mod:`.rtpengine`), driven over its ng control protocol, which is
bencode over UDP (:mod:`.bencode`).
"""
