"""Lightbox drivers: Modbus LED/PWM controllers."""
