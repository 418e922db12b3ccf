"""What a Modbus server must answer to a request before it looks at its registers (pure functions).

The references are the MODBUS Application Protocol Specification V1.1b3 (function sections 6.1
to 6.12 and their state diagrams, exception codes in section 7), MODBUS over Serial Line V1.02
(2.1: unit 0 is the broadcast address, never answered; 2.6: a frame with a bad CRC is dropped)
and the MODBUS Messaging on TCP/IP Implementation Guide V1.0b (p. 23, as libmodbus's
modbus_set_slave documentation quotes it: a TCP server is addressed by its IP address, the unit
identifier is of no use to it, and 0xFF is the value to send it; unit 0 is taken the same way).

A server checks, in this order: is the function code served (else exception 1, ILLEGAL
FUNCTION); is the quantity within the function's limits and does the byte count match it (else
exception 3, ILLEGAL DATA VALUE); then the addresses (exception 2) and the execution (exception
4), which need the device's register map and are checked by the emulators themselves.
"""

from __future__ import annotations

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_VALUE = 3
#: section 7: a gateway's answer when the addressed unit does not respond
GATEWAY_TARGET_FAILED = 0x0B
BROADCAST_UNIT = 0
#: Implementation Guide p. 23: the unit id that addresses a Modbus/TCP server itself
TCP_SELF_UNIT = 0xFF

READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING, READ_INPUT = 0x01, 0x02, 0x03, 0x04
WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS = 0x05, 0x06, 0x0F, 0x10

#: the most items one request may ask for, per function that carries a quantity
QUANTITY_LIMITS: dict[int, int] = {
    READ_COILS: 2000,  # 6.1: 1 to 2000 (0x7D0)
    READ_DISCRETE_INPUTS: 2000,  # 6.2
    READ_HOLDING: 125,  # 6.3: 1 to 125 (0x7D)
    READ_INPUT: 125,  # 6.4
    WRITE_COILS: 1968,  # 6.11: 1 to 1968 (0x7B0)
    WRITE_REGISTERS: 123,  # 6.12: 1 to 123 (0x7B)
}
#: 6.5: "FF 00 hex requests the output to be ON. 00 00 requests it to be OFF. All other
#: values are illegal and will not affect the output."
COIL_VALUES = (0x0000, 0xFF00)


def request_exception(pdu: bytes, served: frozenset[int]) -> int | None:
    """The exception code a server answers this request PDU with before touching registers.

    None: the request passes these checks (it may still fail on its addresses or execution).
    """
    if not pdu:
        return ILLEGAL_DATA_VALUE
    function = pdu[0]
    if function not in served:
        return ILLEGAL_FUNCTION
    if function in QUANTITY_LIMITS:
        if len(pdu) < 5:
            return ILLEGAL_DATA_VALUE
        quantity = int.from_bytes(pdu[3:5], "big")
        if not 1 <= quantity <= QUANTITY_LIMITS[function]:
            return ILLEGAL_DATA_VALUE
        if function in (WRITE_COILS, WRITE_REGISTERS):
            expected = (quantity + 7) // 8 if function == WRITE_COILS else 2 * quantity
            if len(pdu) < 6 or pdu[5] != expected or len(pdu) != 6 + expected:
                return ILLEGAL_DATA_VALUE
    elif function in (WRITE_COIL, WRITE_REGISTER):
        if len(pdu) != 5:
            return ILLEGAL_DATA_VALUE
        if function == WRITE_COIL and int.from_bytes(pdu[3:5], "big") not in COIL_VALUES:
            return ILLEGAL_DATA_VALUE
    return None


def crc16(frame: bytes) -> bytes:
    """The Modbus RTU CRC of `frame`, low byte first as it goes on the line (Serial Line 6.2.2)."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def split_frame(data: bytes, framing: str) -> tuple[int, int, bytes] | None:
    """(transaction id, unit, PDU) of `data` if it is exactly one whole request frame, else None.

    TCP: the MBAP header's length field says where the frame ends. RTU: a frame ends with
    3.5 characters of silence, which a pseudo-terminal does not keep; a buffer whose CRC checks
    out as a whole is taken for one frame (a partial or noisy one does not).
    """
    if framing == "tcp":
        if len(data) < 8 or len(data) != 6 + int.from_bytes(data[4:6], "big"):
            return None
        return int.from_bytes(data[0:2], "big"), data[6], data[7:]
    if len(data) < 4 or crc16(data[:-2]) != data[-2:]:
        return None
    return 0, data[0], data[1:-2]
